"""report.html of a real smoke run: its embedded plots are real, non-blank PNGs, and it renders in Chromium."""

from __future__ import annotations

import base64
import binascii
import io
import shutil
import struct
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from .runs import ROOT, ttbench

pytestmark = pytest.mark.timeout(180)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA_PNG = "data:image/png;base64,"
EXPECTED_PLOTS = {"ttft_cdf", "over_time", "tokens_per_s"}
SCREENSHOT = ROOT / "test-output" / "report-html.png"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "run"
    res = ttbench("run", "scenarios/smoke.yaml", "--out", str(out), "-t", "5s")
    assert res.returncode == 0, res.stderr[-2000:]
    assert (out / "report.html").is_file()
    return out


class _Images(HTMLParser):
    """Every <img> of a page as (alt, src)."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            a = dict(attrs)
            self.images.append((a.get("alt") or "", a.get("src") or ""))


def embedded_pngs(page: str) -> dict[str, bytes]:
    """alt name -> decoded bytes of every data:image/png;base64 <img> of the page."""
    parser = _Images()
    parser.feed(page)
    out: dict[str, bytes] = {}
    for alt, src in parser.images:
        if not src.startswith(DATA_PNG):
            continue
        assert alt and alt not in out, f"embedded image without a unique alt name: {alt!r}"
        try:
            out[alt] = base64.b64decode(src[len(DATA_PNG):], validate=True)
        except binascii.Error as exc:
            raise AssertionError(f"{alt}: the base64 payload does not decode: {exc}") from None
    # None hidden elsewhere (CSS, <object>, a broken tag): every data URI is one of the parsed <img>.
    assert page.count(DATA_PNG) == len(out), "data:image/png URIs outside well-formed <img> tags"
    return out


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, after checking the signature."""
    assert png[:8] == PNG_SIGNATURE, "not a PNG (bad signature)"
    length, kind = struct.unpack(">I4s", png[8:16])
    assert kind == b"IHDR" and length == 13, "the first chunk is not IHDR"
    return struct.unpack(">II", png[16:24])


def pixels(png: bytes) -> np.ndarray:
    """Decoded pixels as uint8 RGB, transparent ones composited over the white page behind them."""
    a = mpimg.imread(io.BytesIO(png))
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    if a.dtype != np.uint8:
        a = np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)
    rgb = a[..., :3].astype(np.float64)
    if a.shape[-1] == 4:
        alpha = a[..., 3:].astype(np.float64) / 255
        rgb = rgb * alpha + 255 * (1 - alpha)
    return np.round(rgb).astype(np.uint8)


def pixel_stats(q: np.ndarray) -> dict[str, float]:
    """Distinct colours, the non-white share and the coloured (non-grey) pixels of an RGB array."""
    lo, hi = q.min(axis=2).astype(int), q.max(axis=2).astype(int)
    return {
        "height": q.shape[0], "width": q.shape[1],
        # each pixel's colour as one 24-bit number: np.unique over rows (axis=0) took 23 s on a 1280x6000 page
        "colours": len(np.unique((q[..., 0].astype(np.uint32) << 16) | (q[..., 1].astype(np.uint32) << 8) | q[..., 2])),
        "non_white": float((lo < 240).mean()),
        "coloured": float((hi - lo > 60).mean()),
        "coloured_px": int((hi - lo > 60).sum()),
    }


def test_embedded_plots_are_real_non_blank_pngs(smoke):
    figs = embedded_pngs((smoke / "report.html").read_text())
    assert EXPECTED_PLOTS <= set(figs), f"plots missing from report.html: {sorted(EXPECTED_PLOTS - set(figs))}"
    for name, png in figs.items():
        width, height = png_size(png)
        assert width > 100 and height > 100, f"{name}: {width}x{height} is too small for a plot"
        s = pixel_stats(pixels(png))
        assert (s["width"], s["height"]) == (width, height), f"{name}: decoded size differs from IHDR"
        assert s["colours"] >= 16, f"{name}: only {s['colours']} distinct colours: blank? {s}"
        assert s["non_white"] >= 0.01, f"{name}: {s['non_white']:.2%} non-white pixels: blank? {s}"
        if name in EXPECTED_PLOTS:  # these always have data in a smoke run: some coloured line or bar is drawn
            assert s["coloured"] >= 0.002, f"{name}: no data drawn ({s['coloured']:.3%} coloured pixels) {s}"


def _chromium() -> str | None:
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


def test_report_renders_in_headless_chromium(smoke, tmp_path):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no chromium: neither `chromium` on PATH nor /usr/bin/chromium (.ci/run installs it)")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={SCREENSHOT}",
           "--window-size=1280,6000", (smoke / "report.html").resolve().as_uri()]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    except subprocess.TimeoutExpired:
        pytest.fail("chromium did not take the screenshot within 60 s")
    assert res.returncode == 0, f"chromium exited {res.returncode}: {res.stderr[-2000:]}"
    assert SCREENSHOT.is_file(), f"no screenshot written: {res.stderr[-2000:]}"
    png = SCREENSHOT.read_bytes()
    assert png_size(png) == (1280, 6000)
    q = pixels(png)
    s = pixel_stats(q)
    assert s["colours"] >= 64, f"screenshot has only {s['colours']} distinct colours: blank page? {s}"
    assert s["non_white"] >= 0.005, f"screenshot is {s['non_white']:.2%} non-white: blank page? {s}"
    # The plots were decoded and drawn by the browser (a broken <img> shows only its alt text, in grey).
    assert s["coloured_px"] >= 2000, f"screenshot has {s['coloured_px']} coloured pixels: plots not drawn? {s}"
    top = pixel_stats(q[:200])
    assert top["non_white"] >= 0.01, f"nothing rendered at the top of the page (the title): {top}"

