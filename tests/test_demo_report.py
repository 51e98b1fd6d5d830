"""The demo's report page: self-contained, and it renders in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from degtrans.report import Figure, Section, Table, format_cell, inline_png, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Injected into a copy of the page by the test only: after load, record how many images decoded.
PROBE = """<script>
window.addEventListener('load', () => {
  const images = [...document.images];
  const broken = images.filter(i => !i.complete || i.naturalWidth === 0);
  document.body.setAttribute('data-images', images.length);
  document.body.setAttribute('data-broken', broken.length);
});
</script></body>"""


def _png(path: Path, seed: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.imshow(np.random.default_rng(seed).random((8, 8)))
    fig.savefig(path)
    plt.close(fig)
    return path


@pytest.fixture
def report(tmp_path) -> Path:
    sections = [
        Section("Calibration", numbers={"mean PSF error": 0.123456, "tiles": 12},
                figures=[Figure(_png(tmp_path / "a.png", 0), "true vs recovered PSFs")]),
        Section("Evaluation", tables=[Table(["method", "PSNR"], [["fovkpn", 31.25], ["identity", 27.5]])],
                figures=[Figure(_png(tmp_path / "b.png", 1), "before / after")]),
        Section("Sweep", skipped="not run in the demo <script>alert(1)</script>"),
    ]  # fmt: skip
    return write_report(tmp_path / "report.html", "degtrans demo", sections, {"version": "0.1.0"})


def test_report_is_self_contained_and_escaped(report):
    text = report.read_text()
    assert text.count("data:image/png;base64,") == 2
    assert not re.search(r'src="(?!data:)', text) and "<link" not in text  # no external resources
    assert "31.250" in text and "0.123" in text and "Skipped: not run" in text
    assert "<script>alert" not in text  # text is escaped


def test_inline_png_rejects_non_png(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_text("no")
    with pytest.raises(ValueError, match="x.png"):
        inline_png(bad)


def test_format_cell():
    assert format_cell(float("nan")) == "—" and format_cell(1234) == "1,234" and format_cell(True) == "yes"


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (make test installs Debian's package)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("</body>", PROBE, 1))
    out = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    dom = out.stdout
    assert 'data-images="2"' in dom and 'data-broken="0"' in dom, dom[-500:]
    assert "31.250" in dom and "fovkpn" in dom and "Skipped" in dom


def test_demo_reports_skipped_and_failed_stages(tmp_path, monkeypatch, capsys):
    from degtrans import demo
    from degtrans.config import RunConfig

    def fine(d):
        d.products["x"] = 1
        return Section("fine", numbers={"answer": 42})

    def missing(d):
        raise demo.StageUnavailable("stage code not in this checkout")

    def broken(d):
        raise ArithmeticError("boom")

    def dependent(d):
        return Section("dependent", numbers={"x": d.need("nothing", "broken")})

    stages = [("fine", fine), ("missing", missing), ("broken", broken), ("dependent", dependent)]
    monkeypatch.setattr(demo, "STAGES", stages)
    with pytest.raises(demo.DemoFailed, match="broken"):
        demo.run_demo(tmp_path / "out", RunConfig())
    out = capsys.readouterr().out
    assert "missing: SKIPPED" in out and "broken: FAILED" in out and "dependent: SKIPPED" in out
    page = (tmp_path / "out" / "report.html").read_text()
    assert "42" in page and "Skipped: failed: ArithmeticError: boom" in page and "stage code not in" in page


def test_demo_config_puts_user_overrides_last():
    from degtrans.demo import demo_config

    config = demo_config(None, ["train.epochs=7"])
    assert config.train.epochs == 7 and config.train.ray.workers == 2 and config.simulate.patch_size == 64
