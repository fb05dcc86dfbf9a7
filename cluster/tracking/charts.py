"""Charts for MLflow artifacts, with the object-oriented matplotlib API.

``matplotlib.figure.Figure`` (no ``pyplot``): no backend is selected, nothing is registered
globally, and a figure is freed once it is no longer referenced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter


def bar_chart(values: Mapping[str, float], title: str, ylabel: str) -> Figure:
    """One bar per entry, value written above it, e.g. F1 of each member, the ensemble and the student."""
    figure = Figure(figsize=(max(4.0, 0.9 * len(values) + 2), 4), layout="constrained")
    ax = figure.add_subplot()
    bars = ax.bar(list(values), list(values.values()), color="tab:blue")
    ax.bar_label(bars, fmt="%.3g", padding=2)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.margins(y=0.12)
    ax.tick_params(axis="x", labelrotation=30 if len(values) > 4 else 0)
    return figure


def grouped_bar_chart(groups: Mapping[str, Mapping[str, float]], title: str, ylabel: str) -> Figure:
    """Bars grouped on the x axis (e.g. per task), one colour per series (e.g. per model), with a legend."""
    series = list(dict.fromkeys(name for values in groups.values() for name in values))
    figure = Figure(figsize=(max(5.0, 1.2 * len(groups) * max(1, len(series)) / 3 + 3), 4.5), layout="constrained")
    ax = figure.add_subplot()
    width = 0.8 / max(1, len(series))
    positions = np.arange(len(groups))
    for index, name in enumerate(series):
        heights = [values.get(name, np.nan) for values in groups.values()]
        ax.bar(positions + (index - (len(series) - 1) / 2) * width, heights, width, label=name)
    ax.set_xticks(positions, list(groups))
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize="small", ncols=min(len(series), 3))
    ax.margins(y=0.15)
    return figure


def heatmap(matrix: Sequence[Sequence[float]] | np.ndarray, labels: Sequence[str], title: str) -> Figure:
    """A square matrix (e.g. domain similarity) as annotated coloured cells, rows and columns labelled."""
    data = np.asarray(matrix, dtype=float)
    if data.shape != (len(labels), len(labels)):
        raise ValueError(f"matrix of shape {data.shape} does not match {len(labels)} labels")
    size = max(4.0, 0.8 * len(labels) + 2)
    figure = Figure(figsize=(size + 1, size), layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(data, cmap="viridis")
    figure.colorbar(image, ax=ax)
    ticks = range(len(labels))
    ax.set_xticks(ticks, labels=list(labels), rotation=45, ha="right")
    ax.set_yticks(ticks, labels=list(labels))
    middle = (np.nanmin(data) + np.nanmax(data)) / 2 if data.size else 0.0
    for (row, col), value in np.ndenumerate(data):
        ax.text(col, row, f"{value:.2f}", ha="center", va="center", color="black" if value > middle else "white")
    ax.set_title(title)
    return figure


def line_chart(
    series: Mapping[str, Sequence[float]],
    xlabel: str,
    ylabel: str,
    title: str,
    x: Sequence[float] | None = None,
) -> Figure:
    """One marked line per series (e.g. F1 of each domain per IMM iteration), with a legend.

    ``x`` gives the shared x values; by default a series of length ``n`` is drawn at ``0..n-1``.
    """
    figure = Figure(figsize=(6, 4), layout="constrained")
    ax = figure.add_subplot()
    for name, values in series.items():
        ax.plot(list(x) if x is not None else range(len(values)), list(values), marker="o", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if series:
        ax.legend()
    return figure


def scatter_panels(
    points: Mapping[str, tuple[Sequence[Any], Sequence[float]]],
    ylabel: str,
    title: str,
    log_x: Sequence[str] = (),
) -> Figure:
    """One panel per x variable (e.g. a metric against each hyperparameter of a sweep), points only.

    ``points[name] = (xs, ys)``; numeric xs are plotted as numbers (log scale for names in
    ``log_x``), anything else as categories in order of first appearance.
    """
    figure = Figure(figsize=(4 * max(1, len(points)), 3.6), layout="constrained")
    axes = figure.subplots(1, max(1, len(points)), squeeze=False)[0]
    for ax, (name, (xs, ys)) in zip(axes, points.items()):
        numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
        if numeric:
            ax.scatter(list(xs), list(ys), color="tab:blue")
            if name in log_x:
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on short ranges
        else:
            labels = list(dict.fromkeys(str(x) for x in xs))
            ax.scatter([labels.index(str(x)) for x in xs], list(ys), color="tab:blue")
            ax.set_xticks(range(len(labels)), labels=labels, rotation=20)
        ax.set_xlabel(name)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    figure.suptitle(title)
    return figure


def labelled_scatter(points: Mapping[str, tuple[float, float]], xlabel: str, ylabel: str, title: str,
                     log_x: bool = False) -> Figure:
    """One labelled point per entry (``points[label] = (x, y)``), e.g. each model's test metric against its speed-up."""
    figure = Figure(figsize=(5.5, 4), layout="constrained")
    ax = figure.subplots()
    for label, (x, y) in points.items():
        ax.scatter([x], [y], color="tab:blue")
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5))
    if log_x:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return figure
