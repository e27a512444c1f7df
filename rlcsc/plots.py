"""How the book's figures look: drawn at the width a page shows them, text as large as the page's,
one colour per run on every page.

The book's content column is about `WIDTH` inches at `DPI` (its pixels at 100% zoom), so a figure
`WIDTH` wide is shown at its drawn size and its `FONT`-point text is as large as the body text.
"""

from __future__ import annotations

import matplotlib as mpl

WIDTH = 7.5  # inches: the book's content column at DPI
DPI = 96  # a page's pixels per inch at 100% zoom
FONT = 12  # points: the book's body text (16 px) at DPI
PAPER = "black"  # the paper's own numbers, on every figure
BICUBIC = "#7f7f7f"
# Colour-blind-safe palette (Okabe-Ito, then Tol's muted), for runs and measured models.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#882255", "#117733", "#332288",
           "#999933", "#AA4499", "#44AA99")


def style() -> None:
    """Apply the book's figure style (call once per notebook, before the first figure)."""
    mpl.rcParams.update({
        "figure.figsize": (WIDTH, WIDTH * 0.6), "figure.dpi": DPI, "savefig.dpi": DPI,
        "font.size": FONT, "axes.titlesize": FONT, "axes.labelsize": FONT, "xtick.labelsize": FONT,
        "ytick.labelsize": FONT, "legend.fontsize": FONT, "figure.titlesize": FONT,
        "axes.grid": True, "grid.alpha": 0.3, "figure.constrained_layout.use": True,
    })


def colours(names: list[str]) -> dict[str, str]:
    """A colour for each run (or measured model) of `names`, in their order, with bicubic's fixed: every
    page passes the same names (`report.Page.colours`), so a run has one colour on every page."""
    out, free = {"Bicubic": BICUBIC, "paper": PAPER}, iter(PALETTE * (1 + len(names) // len(PALETTE)))
    for name in names:
        out.setdefault(name, next(free))
    return out


def legend_below(fig: mpl.figure.Figure, ncols: int = 2) -> None:
    """One legend for every axes of `fig`, under them (outside the data), each label once."""
    entries: dict[str, mpl.artist.Artist] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside lower center", ncols=ncols, frameon=False)
