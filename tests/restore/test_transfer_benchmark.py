"""``benchmarks/transfer.py``'s pieces on tiny inputs: the step runner, the checks, the Gaussian stand-in."""

import operator

import numpy as np
import pytest

from degtrans.calibrate.inspect import second_moment_radius
from degtrans.field import PSFField
from degtrans.simulate.optics import lens_field
from degtrans.testing.synthetic import matched_gaussian_field


@pytest.fixture
def transfer(benchmark_script):
    return benchmark_script("transfer")


def test_steps_run_after_what_they_wait_for_in_this_process(transfer):
    calls = []

    def record(name, value):
        calls.append(name)
        return value

    steps = {
        "late": transfer.Step(record, ("late", 3), ("early",)),
        "early": transfer.Step(record, ("early", 1)),
        "free": transfer.Step(record, ("free", 2)),
    }
    results = transfer.run_steps(steps, jobs=0, log=lambda line: None)
    assert results == {"early": 1, "free": 2, "late": 3}
    assert calls == ["early", "late", "free"]  # each time, the first listed step whose waits are met
    with pytest.raises(ValueError, match="unknown"):
        transfer.run_steps({"a": transfer.Step(record, ("a", 0), ("b",))}, jobs=0)
    cycle = {"a": transfer.Step(record, ("a", 0), ("b",)), "b": transfer.Step(record, ("b", 0), ("a",))}
    with pytest.raises(ValueError, match="each other"):
        transfer.run_steps(cycle, jobs=0)


def test_steps_run_in_spawned_workers_and_a_failure_names_its_step(transfer):
    steps = {
        "sum": transfer.Step(operator.add, (1, 2)),
        "product": transfer.Step(operator.mul, (3, 4), ("sum",)),
    }
    lines = []
    assert transfer.run_steps(steps, jobs=2, log=lines.append) == {"sum": 3, "product": 12}
    assert [line.split("done: ")[1] for line in lines] == ["sum", "product"]
    with pytest.raises(RuntimeError, match="step 'broken' failed: ZeroDivisionError"):
        transfer.run_steps({"broken": transfer.Step(operator.truediv, (1, 0))}, jobs=1, log=lambda line: None)


def _rows(psnr: dict[str, tuple[float, float]]) -> list[dict]:
    """Evaluation rows with the given (all, corner) PSNR per method (centre and mid as all)."""
    zones = {"all": 0, "centre": 0, "mid": 0, "corner": 1}
    return [
        {"method": m, "zone": z, "psnr": v[i], "ssim": 0.5} for m, v in psnr.items() for z, i in zones.items()
    ]


def test_checks_hold_the_calibrated_field_to_each_bar(transfer):
    rows = _rows({
        "deep-wiener/calibrated": (28.0, 27.0), "deep-wiener/true": (28.4, 27.9),
        "deep-wiener/gaussian": (26.4, 25.0), "deep-wiener/other": (27.2, 26.0),
        "wiener/calibrated": (26.0, 25.0), "wiener/true": (26.7, 25.5),
    })  # fmt: skip
    found = {(c["method"], c["against"]): c for c in transfer.checks(rows, ["wiener"])}
    assert set(found) == {("deep-wiener", "true"), ("deep-wiener", "gaussian"), ("deep-wiener", "other"),
                          ("wiener", "true")}  # fmt: skip
    assert found[("deep-wiener", "true")]["gap_db"] == pytest.approx(-0.4)
    assert found[("deep-wiener", "true")]["corner_gap_db"] == pytest.approx(-0.9)
    assert found[("deep-wiener", "true")]["met"]  # within 0.5 dB over the frames; the corner is reported
    assert found[("deep-wiener", "gaussian")]["met"]  # 1.6 >= 1.5
    assert not found[("deep-wiener", "other")]["met"]  # 0.8 < 1
    assert not found[("wiener", "true")]["met"]  # 0.7 dB apart


def test_the_gaussian_stand_in_has_the_fields_mean_width_everywhere():
    field = lens_field((2, 3), 21, (64, 96), "phone-wide")
    gaussian = matched_gaussian_field(field)
    widths = second_moment_radius(gaussian.psfs)
    assert widths == pytest.approx(np.full(widths.shape, second_moment_radius(field.psfs).mean()), abs=1e-4)
    assert (gaussian.grid, gaussian.kernel_size, gaussian.image_size) == (field.grid, 21, field.image_size)
    psf = gaussian.psfs[0, 0, 0]
    assert np.allclose(psf, psf.T) and np.allclose(psf, psf[::-1])  # round
    corners = np.zeros((1, 1, 3, 5, 5), np.float32)
    corners[..., ::4, ::4] = 0.25  # wider than any Gaussian cut to 5x5 can be
    with pytest.raises(ValueError, match="does not fit"):
        matched_gaussian_field(PSFField(corners, (32, 32)))


def test_the_plan_trains_and_scores_each_field_after_what_it_needs(transfer, tmp_path):
    import argparse

    from degtrans.config import RestoreConfig, SimulateConfig, TrainConfig

    args = argparse.Namespace(targets=4, seed=0, photos=tmp_path, profile="p", other=None, lens="random-2",
                              steps=3, device="cpu", time_budget=0.0)  # fmt: skip
    models = {"wiener": TrainConfig(model="wiener"), "fovkpn": TrainConfig(model="fovkpn")}
    steps = transfer.plan(tmp_path, [], [], models, args, SimulateConfig(), RestoreConfig())
    fields = ("true", "calibrated", "gaussian", "other")
    assert {f"score:{net}/{f}" for net in ("deep-wiener", "fovkpn") for f in fields} <= set(steps)
    assert steps["pairs:true"].after == () and steps["pairs:calibrated"].after == ("calibrate",)
    assert steps["score:deep-wiener/gaussian"].after == ("held-out", "train:gaussian:wiener")
    assert steps["train:true:fovkpn"].args[0] is models["fovkpn"]
    order = []
    recorded = {name: transfer.Step(order.append, (name,), step.after) for name, step in steps.items()}
    transfer.run_steps(recorded, jobs=0, log=lambda line: None)
    assert len(order) == len(steps)  # nothing is left waiting


def test_scored_restorers_are_drawn_side_by_side_and_reported(transfer, tmp_path):
    import torch

    def scored(label, value):
        crops = [{"sample_id": f"f{i}", "zone": "corner", "degraded": torch.zeros(3, 8, 8),
                  "clean": torch.ones(3, 8, 8), "restored": {label: torch.full((3, 8, 8), value)}}
                 for i in range(2)]  # fmt: skip
        return {"rows": [], "crops": crops}

    png = transfer.draw_crops({"a/x": scored("a/x", 0.5), "b/y": scored("b/y", 0.9)}, tmp_path / "c.png")
    assert png.stat().st_size > 0
    labels = [
        f"{m}/{f}" for m in ("deep-wiener", "wiener") for f in ("calibrated", "true", "gaussian", "other")
    ]
    rows = _rows({label: (25.0 + i, 24.0) for i, label in enumerate(labels)})
    calibration = {
        "aligned_median": 0.06,
        "aligned_max": 0.09,
        "raw_median": 0.06,
        "raw_max": 0.1,
        "seconds": 9,
    }
    report = {"args": {"lens": "random-2", "device": "cpu"}, "other": {"preset": "phone-tele"},
              "held_out": [{}] * 20, "training": {"train:true:wiener": {"steps": 400}},
              "calibration": calibration, "rows": rows}  # fmt: skip
    report["checks"] = transfer.checks(rows, ["wiener"])
    text = "\n".join(transfer.report_lines(report))
    assert "deep-wiener  calibrated - true      -1.00 dB (corner +0.00); |gap| <= 0.5: NOT met" in text
    assert "aligned PSF error median 0.060" in text and "true:wiener 400" in text
