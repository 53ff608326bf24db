"""`snakemake --report` from the shared workflow run, opened in a real headless browser."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess

import pytest
from conftest import snakemake_command, snakemake_env
from matplotlib.image import imread

pytestmark = pytest.mark.workflow

CATEGORIES = ["1. Tokenizers", "2. Pretraining", "3. Fine-tuning", "4. Tables 1-7", "5. Runtime", "6. Codebook analysis"]


def _chromium() -> str:
    """Debian's chromium, which .ci/run installs (VQDNA_TEST_BROWSER=1 there: missing is a failure, not a skip)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("VQDNA_TEST_BROWSER") == "1":
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    return found


@pytest.fixture(scope="module")
def report(workflow_run, tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "report.html"
    result = subprocess.run(snakemake_command(workflow_run.workdir, "--report", str(path)), cwd=workflow_run.workdir,
                            env=snakemake_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return path


def _browse(report, *flags: str) -> subprocess.CompletedProcess:
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
               "--virtual-time-budget=15000", *flags, report.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_the_report_renders_every_category_without_console_errors(report):
    result = _browse(report, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "CONSOLE" in line and re.search(r"error|uncaught", line, re.I)]
    assert errors == []
    for category in CATEGORIES:  # a rendered menu entry; the embedded data alone has no <span>
        assert f"<span>{category}</span>" in result.stdout, category


def test_a_screenshot_of_the_report_is_not_blank(report, tmp_path):
    screenshot = tmp_path / "report.png"
    result = _browse(report, f"--screenshot={screenshot}", "--window-size=1400,1000")
    assert result.returncode == 0 and screenshot.is_file(), result.stderr[-2000:]
    image = imread(screenshot)
    assert image.shape[:2] == (1000, 1400) and float(image[..., :3].std()) > 0.05


def test_every_figure_in_the_report_is_a_non_blank_image(report):
    """The figures are embedded as data URIs: each decodes as a PNG with more than one colour in it."""
    html = report.read_text()
    figures = re.findall(r"data:image/png;charset=utf8;filename=([^;]+);base64,([A-Za-z0-9+/=]+)", html)
    assert len(figures) >= 5, [name for name, _ in figures]  # at least one per figure category
    for name, data in figures:
        image = imread(io.BytesIO(base64.b64decode(data)), format="png")
        assert min(image.shape[:2]) > 100 and float(image[..., :3].std()) > 0.05, name
