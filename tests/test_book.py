"""The built book (after `dvc repro`): a page per table and figure with a rendered table or image."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from bs4 import BeautifulSoup
from PIL import Image

from rlcsc import report, scorecard
from rlcsc.config import load_block

REPO = Path(__file__).resolve().parents[1]
HTML = REPO / "book" / "_build" / "html"
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


@pytest.mark.parametrize("name", ["intro", "methods", *TABLES, *FIGURES])
def test_no_page_shows_its_code(html: Path, name: str) -> None:
    """Every page shows what its code computes, never the code (each code cell is tagged remove-input)."""
    assert not page(html, name).select("article .cell_input")


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
    for name in ("index", "generated/intro", "generated/methods", "deviations"):
        assert (html / f"{name}.html").exists()


def test_the_scorecard_holds_the_numbers_of_the_files(html: Path) -> None:
    """The first page's table of what is reproduced, cell by cell, against the scorecard computed now from the
    results, the recorded runs and the reference tables: a page built from other files fails."""
    page_ = report.page(str(REPO / "params.yaml"), str(REPO / "results"), str(REPO / "models"), str(REPO / "runs"),
                        load_block(REPO / "params.yaml", "report", report.ReportParams).main)
    lines = scorecard.lines(page_, page_.tolerance())
    table = next(t for t in page(html, "intro").select("article table") if "matched" in t.get_text())
    cells = [[c.get_text(strip=True) for c in tr.find_all(["th", "td"])] for tr in table.select("tbody tr")]
    rows = {row[0]: row[1:] for row in cells}
    assert set(rows) == {line.item for line in lines}
    for line in lines:
        published, measured, matched, spread, run = rows[line.item][:5]
        assert (int(published), int(measured), int(matched)) == (line.published, len(line.differences), line.matched)
        assert spread == line.spread() and run == (line.run.name if line.run else "none yet")
    totals = scorecard.totals(lines)  # the headline counts each distinct published number once
    text = " ".join(page(html, "intro").select_one("article").get_text().split())
    assert f"of the paper’s {totals.published} published RL-CSC numbers" in text
    assert f"measured {totals.measured} of the {totals.published}" in text or not totals.measured
    gaps = scorecard.gaps(lines)  # and why the rest are not: beyond the tolerances, or without a value yet
    assert (f"The other {totals.published - totals.matched} are not reproduced yet. {gaps.outside} of them lie beyond"
            in text) or totals.matched == totals.published or not totals.measured


def test_the_output_route_sentence_holds_the_file(html: Path) -> None:
    """The methods page counts, from VDSR's output-route file and the paper's Table 2, the cells whose IFC lies
    nearer the protocol's route than the RGB route's, and names the route only when every cell agrees."""
    from rlcsc.reference import table

    route = json.loads((REPO / "runs" / "VDSR-official" / "output_route.json").read_text())["metrics"]
    paper = table("table2").query("method == 'VDSR'")
    cells = [(row.ifc, route[row.dataset][f"x{row.scale}"]) for row in paper.itertuples()]
    nearer = sum(abs(p - c["ifc_y"]) < abs(p - c["ifc_rgb"]) for p, c in cells)
    text = " ".join(page(html, "methods").get_text().split())
    assert f"than the RGB route’s in {nearer} of {len(cells)} cells" in text
    assert ("scored VDSR’s Y directly" in text) == (nearer == len(cells))


def test_no_page_calls_a_run_completed(html: Path) -> None:
    """A run says how far it trained ("1 of 35 epochs"), never "completed", which a run short of its plan is not."""
    pages = sorted((html / "generated").glob("*.html"))
    assert len(pages) == len(list((REPO / "notebooks").glob("*.ipynb")))
    for path in pages:
        text = BeautifulSoup(path.read_text(), "html.parser").select_one("article").get_text()
        assert "completed" not in text, path.name


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
    """The main experiment's runs that differ only in their seed (as params.yaml resolves them under its budget)
    are one group, named with their budget and seeds."""
    from dataclasses import asdict

    from rlcsc.config import read_params
    from rlcsc.record import resolved

    params = REPO / "params.yaml"
    budget, names = read_params(params)["budget"], list(read_params(params)["experiments"])
    blocks = {name: asdict(resolved(params, budget, name)["train"]) for name in names}
    main = blocks[load_block(params, "report", report.ReportParams).main]
    seeds = [str(b["seed"]) for b in blocks.values() if {**b, "seed": 0} == {**main, "seed": 0}]
    assert len(seeds) > 1, "params.yaml repeats the main experiment with no other seed"
    text = page(html, name).get_text()
    assert "Spread over seeds" in text and "differ between machines" in text
    assert f"{budget} budget, seeds {', '.join(seeds)}" in text


# Measures every figure of a page as Chromium lays it out at 1400 px: its drawn width (the PNG's pixels) and
# the width it is shown at, after opening every collapsed block; and the body text's size.
MEASURE = """<script>window.addEventListener('load', () => {
  document.querySelectorAll('details').forEach(d => d.open = true);
  document.querySelectorAll('.toggle-hidden, .hide-output, .cell_output').forEach(e => e.style.display = 'block');
  const sizes = [...document.querySelectorAll('article img')]
    .map(i => [i.getAttribute('src'), i.naturalWidth, i.getBoundingClientRect().width]);
  const body = getComputedStyle(document.querySelector('article p')).fontSize;
  const out = document.createElement('pre'); out.id = 'measured'; out.textContent = JSON.stringify({sizes, body});
  document.body.appendChild(out);
});</script>"""


@pytest.mark.parametrize("name", FIGURES + ["table3"])
def test_figures_are_shown_at_their_drawn_width(html: Path, name: str, tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed")
    source = (html / "generated" / f"{name}.html").read_text()
    base = f'<base href="{(html / "generated").as_uri()}/">'
    probe = tmp_path / f"{name}.html"
    probe.write_text(source.replace("<head>", "<head>" + base, 1).replace("</body>", MEASURE + "</body>", 1))
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--allow-file-access-from-files", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,2000",
           "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()]
    dom = BeautifulSoup(subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout, "html.parser")
    measured = json.loads(dom.select_one("#measured").get_text())
    assert float(measured["body"].rstrip("px")) >= 15, measured["body"]
    assert measured["sizes"], f"{name}: no figure measured"
    for src, drawn, shown in measured["sizes"]:
        assert drawn > 0 and shown >= 0.8 * drawn, f"{name}: a figure drawn {drawn} px wide is shown at {shown:.0f} px"
