"""PNG plots of evaluations and comparisons (matplotlib Figure objects: no pyplot state, no display)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def _wrap(text: str, width: int = 40) -> str:
    """Long labels (file names, override strings) over several lines, cut at any character."""
    return "\n".join(textwrap.wrap(str(text), width, break_long_words=True)) or str(text)


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def turns_histogram(turns: Sequence[int], path: str | Path, title: str = "turns per trajectory") -> Path:
    """One bar per number of turns (model replies), with the mean marked."""
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    if turns:
        top = max(turns)
        axes.hist(turns, bins=[b - 0.5 for b in range(0, top + 2)], edgecolor="black")
        mean = sum(turns) / len(turns)
        axes.axvline(mean, color="tab:red", linestyle="--", label=f"mean {mean:.2f}")
        axes.legend()
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # turns and counts are whole numbers
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set(xlabel="turns", ylabel="trajectories")
    axes.set_title(_wrap(title, 60), fontsize="medium")
    return _save(figure, path)


def turns_boxplot(turns_by_label: Mapping[str, Sequence[int]], path: str | Path, title: str = "turns per trajectory") -> Path:
    """One horizontal box per run (label), to compare turn distributions; triangles mark means."""
    labels = list(turns_by_label)
    figure = Figure(figsize=(8, 1.5 + 0.7 * len(labels)))
    axes = figure.subplots()
    axes.boxplot([list(turns_by_label[label]) for label in labels], orientation="horizontal", showmeans=True)
    axes.set_yticks(range(1, len(labels) + 1), [_wrap(label) for label in labels], fontsize="small")
    axes.invert_yaxis()  # first label on top
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set(title=title, xlabel="turns")
    return _save(figure, path)


def error_bars(table: pd.DataFrame, bounds: tuple[pd.DataFrame, pd.DataFrame] | None):
    """pandas' asymmetric yerr (columns x [below, above] x rows) from interval tables, or None."""
    if bounds is None:
        return None
    low, high = bounds
    return np.stack([(table - low).to_numpy().T, (high - table).to_numpy().T], axis=1)


def bar_chart(table: pd.DataFrame, path: str | Path, title: str, ylabel: str, bounds=None) -> Path:
    """Grouped bars: one group per row of the pivot table, one bar per column; with `bounds`
    ((low, high) tables), the intervals as error bars."""
    figure = Figure(figsize=(max(8, 0.8 * table.size + 4), 4.5))
    axes = figure.subplots()
    table.rename(columns=lambda c: _wrap(c, 30)).plot.bar(ax=axes, rot=0, edgecolor="black", yerr=error_bars(table, bounds), capsize=3)
    axes.set_xticks(axes.get_xticks(), [_wrap(label, 16) for label in table.index])
    axes.set(ylabel=ylabel, xlabel=table.index.name or "")
    axes.set_title(_wrap(title, 60), fontsize="medium")
    axes.legend(title=table.columns.name, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(figure, path)


def line_chart(table: pd.DataFrame, path: str | Path, title: str, ylabel: str, bounds=None) -> Path:
    """One line per column over the rows as x (data size, say), points marked; with `bounds`,
    the intervals as error bars."""
    figure = Figure(figsize=(9, 4.5))
    axes = figure.subplots()
    bars = {"yerr": error_bars(table, bounds), "capsize": 3} if bounds is not None else {}  # a line takes no capsize alone
    table.rename(columns=lambda c: _wrap(c, 30)).plot.line(ax=axes, marker="o", **bars)
    axes.set(ylabel=ylabel, xlabel=table.index.name or "")
    axes.set_title(_wrap(title, 60), fontsize="medium")
    axes.legend(title=table.columns.name, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(figure, path)
