"""Degradation transfer: register targets to photographs and fit the camera's PSF field."""

from degtrans.field import PSFField, normalise_psfs

__all__ = ["PSFField", "normalise_psfs"]
