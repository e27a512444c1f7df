"""The built book (after `dvc repro`): a page per table and figure with a rendered table or image."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from bs4 import BeautifulSoup
from PIL import Image

HTML = Path(__file__).resolve().parents[1] / "book" / "_build" / "html"
TABLES = ["table1", "table2", "table3", "table4"]
FIGURES = ["figure1", "figure7", "figure8", "figures4_6", "training_time"]


@pytest.fixture(scope="module")
def html() -> Path:
    if not (HTML / "index.html").exists():
        pytest.skip("the book is not built; run `dvc repro` first")
    return HTML


def page(html: Path, name: str) -> BeautifulSoup:
    path = html / "generated" / f"{name}.html"
    assert path.exists(), f"no page for {name}"
    return BeautifulSoup(path.read_text(), "html.parser")


@pytest.mark.parametrize("name", TABLES)
def test_table_pages_render_tables_with_numbers(html: Path, name: str) -> None:
    soup = page(html, name)
    tables = soup.select("article table")
    assert tables, f"{name}: no table rendered"
    cells = [td.get_text(strip=True) for t in tables for td in t.find_all("td")]
    numbers = [c for c in cells if c.replace(".", "", 1).replace(",", "").lstrip("+-").isdigit()]
    assert len(numbers) >= 8, f"{name}: only {len(numbers)} numeric cells"
    assert "budget" in soup.get_text(), f"{name}: the budget is not stated"
    assert "Runs on this page" in soup.get_text() or name == "table4", f"{name}: the runs are not labelled"


@pytest.mark.parametrize("name", FIGURES)
def test_figure_pages_render_images(html: Path, name: str) -> None:
    images = page(html, name).select("article img")
    assert images, f"{name}: no image rendered"
    for img in images:
        src = img["src"]
        if not src.startswith("data:"):
            file = (html / "generated" / src).resolve()
            assert file.exists() and file.stat().st_size > 5000, f"{name}: {src} missing or empty"


def test_intro_methods_and_deviations_pages_exist(html: Path) -> None:
    for name in ("index", "generated/methods", "deviations"):
        assert (html / f"{name}.html").exists()


@pytest.mark.parametrize("name", ["table1", "figure7"])
def test_pages_are_drawn_in_headless_chromium(html: Path, name: str, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed")
    shot = tmp_path / f"{name}.png"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1280,2000",
           f"--screenshot={shot}", (html / "generated" / f"{name}.html").as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 20, f"{name}: the screenshot is blank"
    dark = (pixels < 128).mean()
    assert 0.005 < dark < 0.6, f"{name}: {dark:.3f} of the page is dark"


@pytest.mark.parametrize("name", ["table1", "figure7"])
def test_the_spread_over_seeds_is_shown(html: Path, name: str) -> None:
    text = page(html, name).get_text()
    assert "Spread over seeds" in text and "differ between machines" in text and "quick budget, seeds 0, 1, 2" in text
