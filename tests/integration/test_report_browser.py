"""report.html in a real headless browser (Debian's chromium): it paints, every inlined image decodes, the table has rows."""

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import tiny_overrides
from PIL import Image, ImageStat

import kdgen
from kdgen.report.page import build_report

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--window-size=1280,2400"]
# appended to a copy of the page: writes what the browser made of the images and the table into the DOM
PROBE = """<script>
window.addEventListener("load", () => {
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify({
    widths: Array.from(document.images, (img) => img.naturalWidth),
    rows: document.querySelectorAll("table#metrics tbody tr").length,
  });
  document.body.appendChild(pre);
});
</script>"""


def _chromium() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)
    if found is None:
        pytest.skip("chromium is not installed; install it with `apt-get install chromium` to run the browser check")
    return found


def _browser(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """One headless chromium run with a fresh profile folder; fails the test with its stderr on a non-zero exit."""
    cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def report(tiny_teacher, tmp_path_factory):
    chromium = _chromium()
    out = tmp_path_factory.mktemp("browser") / "run"
    kdgen.distill("configs/gan/mnist5k-demo.yaml", tiny_overrides(tiny_teacher, out, steps=2))
    return chromium, build_report(out)


def test_screenshot_is_not_blank(report, tmp_path):
    chromium, page = report
    shot = tmp_path / "page.png"
    _browser(chromium, tmp_path / "profile", f"--screenshot={shot}", page.as_uri())
    with Image.open(shot) as im:
        assert im.size == (1280, 2400)
        variance = ImageStat.Stat(im.convert("L")).var[0]
    assert variance > 100, f"the screenshot is (almost) one colour: pixel variance {variance:.1f}"


def test_images_decode_and_table_has_rows(report, tmp_path):
    chromium, page = report
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    proc = _browser(chromium, tmp_path / "profile", "--dump-dom", "--virtual-time-budget=5000", probed.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert found, f"the probe did not run; DOM tail: {proc.stdout[-1000:]}"
    probe = json.loads(html.unescape(found.group(1)))
    assert len(probe["widths"]) >= 3 and all(w > 0 for w in probe["widths"]), probe
    assert probe["rows"] >= 5, probe  # FID, KID, params, MACs, latency ...
