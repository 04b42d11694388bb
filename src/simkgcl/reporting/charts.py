"""The report's charts: matplotlib figures rendered to SVG and inlined as data URIs.

matplotlib draws them (Agg backend, no display needed) and writes SVG with text as paths, so a
chart needs no font and no script to display; each SVG is embedded as an ``<img>`` data URI, a
document of its own, so the ids matplotlib writes into one chart can never clash with another's.
Every model keeps its colour across all charts of a report.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from simkgcl.errors import ConfigError

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


def require_matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise ConfigError("the report needs matplotlib: pip install 'simkgcl[report]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def colour(index: int) -> str:
    return COLOURS[index % len(COLOURS)]


@contextmanager
def _svg_style():
    plt = require_matplotlib()
    import matplotlib

    style = {"svg.fonttype": "path", "svg.hashsalt": "simkgcl", "savefig.format": "svg",
             "font.size": 9, "axes.spines.top": False, "axes.spines.right": False,
             "axes.grid": True, "grid.alpha": 0.3}
    with matplotlib.rc_context(style):
        yield plt


def to_data_uri(fig: Any) -> str:
    """The figure as an SVG ``data:`` URI (and the figure closed)."""
    plt = require_matplotlib()
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode()


def image_uri(buf: bytes, kind: str) -> str:
    return f"data:image/{kind};base64," + base64.b64encode(buf).decode()


def _curve(histories: Sequence[Sequence[Mapping[str, Any]]], pick) -> tuple[list, list, list, list]:
    """Epochs, mean, min and max over runs of ``pick(record)`` (runs that reached the epoch)."""
    by_epoch: dict[int, list[float]] = {}
    for history in histories:
        for rec in history:
            value = pick(rec)
            if value is not None and math.isfinite(value):
                by_epoch.setdefault(int(rec["epoch"]), []).append(float(value))
    epochs = sorted(by_epoch)
    return (epochs, [sum(by_epoch[e]) / len(by_epoch[e]) for e in epochs],
            [min(by_epoch[e]) for e in epochs], [max(by_epoch[e]) for e in epochs])


def learning_curves(histories: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]],
                    valid_metric: str, colours: Mapping[str, str]) -> str | None:
    """One panel per loss term and one for the validation metric; a line per model (mean over
    seeds) with the seeds' min–max as a band."""
    terms: list[str] = []
    for runs in histories.values():
        for history in runs:
            for rec in history:
                terms += [t for t in rec.get("losses", {}) if t not in terms]
    panels = [(f"loss: {t}", lambda r, t=t: r.get("losses", {}).get(t)) for t in terms]
    if len(terms) > 1:
        panels.append(("loss: total", lambda r: r.get("loss")))
    panels.append((f"valid {valid_metric}", lambda r: (r.get("valid") or {}).get(valid_metric)))
    if not any(any(h for h in runs) for runs in histories.values()):
        return None
    from matplotlib.ticker import MaxNLocator

    with _svg_style() as plt:
        ncols = min(3, len(panels))
        nrows = math.ceil(len(panels) / ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(4.0 * ncols, 2.8 * nrows), squeeze=False)
        for ax, (title, pick) in zip(axes.flat, panels, strict=False):
            for label, runs in histories.items():
                epochs, mean, low, high = _curve(runs, pick)
                if not epochs:
                    continue
                ax.plot(epochs, mean, color=colours[label], label=label, linewidth=1.4)
                if len(runs) > 1:
                    ax.fill_between(epochs, low, high, color=colours[label], alpha=0.2,
                                    linewidth=0)
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        legend: dict[str, Any] = {}  # every model, whichever panels it appears in
        for ax in axes.flat:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                legend.setdefault(label, handle)
        labels = [lb for lb in histories if lb in legend]
        handles = [legend[lb] for lb in labels]
        fig.legend(handles, labels, loc="upper center", ncol=min(6, len(labels)),
                   bbox_to_anchor=(0.5, 1.02), frameon=False)
        fig.tight_layout(rect=(0, 0, 1, 0.94))
        return to_data_uri(fig)


def grouped_bars(categories: Sequence[str], series: Mapping[str, Sequence[tuple[float, float]]],
                 colours: Mapping[str, str], ylabel: str, xlabel: str = "") -> str:
    """Bars of (mean, std) per category, one bar per series, std as error bars."""
    with _svg_style() as plt:
        n = max(1, len(series))
        width = 0.8 / n
        fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * n * len(categories) + 1.5), 3.2))
        for j, (label, values) in enumerate(series.items()):
            xs = [i - 0.4 + width * (j + 0.5) for i in range(len(categories))]
            means = [v[0] for v in values]
            errs = [v[1] for v in values]
            ax.bar(xs, means, width=width * 0.95, yerr=errs, capsize=2, color=colours[label],
                   label=label, error_kw={"linewidth": 0.8})
        ax.set_xticks(range(len(categories)), list(categories))
        ax.set_ylabel(ylabel)
        if xlabel:
            ax.set_xlabel(xlabel)
        ax.grid(axis="x", visible=False)
        ax.legend(frameon=False, ncol=min(6, n), loc="upper center",
                  bbox_to_anchor=(0.5, 1.18))
        fig.tight_layout()
        return to_data_uri(fig)


def trial_history(rows: Sequence[Mapping[str, Any]], valid_metric: str, bigger: bool) -> str:
    """The tuning study's score per trial and best so far (tuning's own plot, as SVG)."""
    from simkgcl.tuning.report import plot_history

    with _svg_style():
        buf = io.BytesIO()
        plot_history(rows, buf, valid_metric, bigger)
    return image_uri(buf.getvalue(), "svg+xml")
