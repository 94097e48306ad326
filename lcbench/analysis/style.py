"""How every figure looks, fixed in one place: a colour per method, a marker and line style per variant,
the two print layouts (full text width and one column) and the axis text (quality direction, log ticks).

A method's colour and first marker follow its place in the registry (discovery order: stable, and a new
method takes the next free one). A method's variants are ranked once per report, its default variant
(named like the method) first, so "KD (teacher 2×)" has the same look in every panel and figure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from ..methods import method_order
from ..training.tasks import Quality

# matplotlib's ten, then black and two darker tones: a colour and a marker of its own for every method lcbench
# registers (the test checks), before an entry-point method shares one
PALETTE = [*(f"C{i}" for i in range(10)), "black", "#6b4e16", "#0b3d91"]
MARKERS = ["s", "o", "^", "v", "D", "P", "X", "*", "h", "<", ">", "p", "d"]
VARIANT_MARKERS = ["o", "s", "D", "^", "v", "p", "h", "<", ">"]  # a variant's own: open, easy to tell apart
VARIANT_LINESTYLES = ["-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1))]
MIN_FONT = 7  # points at print size: nothing smaller in any figure


@dataclass(frozen=True)
class Layout:
    """A print size: the figure's width in inches, panels per row, each row's height, the font size."""

    name: str
    width: float
    columns: int
    row_height: float
    font: float
    suffix: str


FULL = Layout("text width", 7.0, 3, 2.3, 8, "")
COLUMN = Layout("column width", 3.3, 1, 2.0, MIN_FONT, "_column")
LAYOUTS = (FULL, COLUMN)


def rc(layout: Layout) -> dict:
    """matplotlib settings of a layout: every text at the layout's font size."""
    size = layout.font
    return {
        "font.size": size,
        "axes.titlesize": size,
        "axes.labelsize": size,
        "xtick.labelsize": size,
        "ytick.labelsize": size,
        "legend.fontsize": size,
        "lines.markersize": 4.5,
        "errorbar.capsize": 2,
    }


def _method_index(method: str) -> int:
    """The method's place among the registered compression methods (`none` left out); an id not
    installed here takes a place from its name, the same in every figure."""
    order = [m for m in method_order() if m != "none"]
    return order.index(method) if method in order else len(order) + sum(map(ord, method))


def method_color(method: str) -> str:
    return PALETTE[_method_index(method) % len(PALETTE)]


def method_marker(method: str) -> str:
    return MARKERS[_method_index(method) % len(MARKERS)]


@dataclass(frozen=True)
class Look:
    color: str
    marker: str
    linestyle: str | tuple
    filled: bool


class Looks:
    """The look of every (method, variant) of a report, ranked once so it never changes between panels."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        variants: dict[str, set[str]] = {}
        for method, variant in pairs:
            variants.setdefault(method, set()).add(variant)
        self.rank = {
            (method, v): i
            for method, names in variants.items()
            for i, v in enumerate(sorted(names, key=lambda v: (v != method, v)))
        }

    def __call__(self, method: str, variant: str) -> Look:
        i = self.rank.get((method, variant), 0)
        own = method_marker(method)
        others = [m for m in VARIANT_MARKERS if m != own]
        marker = own if i == 0 else others[(i - 1) % len(others)]
        return Look(method_color(method), marker, VARIANT_LINESTYLES[i % len(VARIANT_LINESTYLES)], i == 0)


def quality_label(quality: Quality, prefix: str = "") -> str:
    """The y label with the way that is better: `top-1 (%), ↑ better`, `perplexity, ↓ better`."""
    name = (
        "top-1 (%)"
        if quality.key == "top1"
        else quality.label
        if quality.key == "score"
        else quality.label.lower()
    )
    return f"{prefix}{name}, {'↑' if quality.higher_is_better else '↓'} better"


def nice_log_ticks(low: float, high: float, most: int = 5) -> list[float]:
    """Plain-number ticks for a log axis from `low` to `high`: 1-2-5 per decade (finer within one
    decade), thinned to at most `most` so labels never crowd."""
    if not (low > 0 and high > 0 and math.isfinite(low) and math.isfinite(high)):
        return []
    steps = (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8) if high / low < 10 else (1, 2, 5)
    ticks = [
        m * 10.0**e
        for e in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
        for m in steps
        if low <= m * 10.0**e <= high
    ]
    while len(ticks) > most:
        ticks = ticks[::2]
    return ticks or [low, high]


def log_axis(ax, values: Iterable[float]) -> None:
    """A log x axis with at most five plain-number labels and no minor labels (linear where no value is
    positive)."""
    finite = np.array([v for v in values if v is not None and math.isfinite(v) and v > 0])
    if not len(finite):  # nothing positive (e.g. no FLOPs counted): a linear axis
        return
    ax.set_xscale("log")
    low, high = finite.min(), finite.max()
    pad = (high / low) ** 0.08 if high > low else 1.15
    ax.set_xlim(low / pad, high * pad)
    ax.xaxis.set_major_locator(FixedLocator(nice_log_ticks(low / pad, high * pad)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
