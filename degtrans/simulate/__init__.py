"""Raw-domain imaging simulation: unprocess, optics, CFA, noise, demosaic, process; virtual lenses."""

from degtrans.simulate.camera import CameraProfile, bundled_profiles, load_profile
from degtrans.simulate.cfa import demosaic
from degtrans.simulate.degrade import (
    DegradeParams,
    PairSettings,
    degrade,
    sample_generator,
    sample_params,
    simulate_pair,
)
from degtrans.simulate.isp import ISPParams, ISPRanges, process, sample_isp_params, unprocess
from degtrans.simulate.noise import NoiseModel, NoiseParams, sample_noise_params
from degtrans.simulate.optics import PRESETS, LensSpec, lens_field, random_lens

__all__ = [
    "PRESETS",
    "CameraProfile",
    "DegradeParams",
    "ISPParams",
    "ISPRanges",
    "LensSpec",
    "NoiseModel",
    "NoiseParams",
    "PairSettings",
    "bundled_profiles",
    "degrade",
    "demosaic",
    "lens_field",
    "load_profile",
    "process",
    "random_lens",
    "sample_generator",
    "sample_isp_params",
    "sample_noise_params",
    "sample_params",
    "simulate_pair",
    "unprocess",
]
