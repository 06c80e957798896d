"""The learning curves of a run as one PNG, drawn with matplotlib from the plot data of :mod:`xdc_core.plots`.

Per iteration: cluster quality (purity and NMI against the labels, NMI with the previous
iteration), the video–audio cluster agreement against its chance level, and the cluster sizes;
per epoch, the pseudo-label losses; and the linear-probe top-1 when the run was evaluated.

:func:`panels` turns plot rows into what to draw (pure); :func:`render_png` draws it; :func:`curves_html`
wraps the PNG in a self-contained page (the Kubeflow evaluate component's visualisation).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PANEL_W, PANEL_H, DPI = 480, 320, 100  # pixels per panel


@dataclass(frozen=True)
class Series:
    label: str
    points: list[tuple[float, float]]


@dataclass(frozen=True)
class Panel:
    """One chart: lines over ``x_label``, or horizontal ``bars`` (label, value in 0..1)."""

    title: str
    x_label: str = ""
    series: list[Series] = field(default_factory=list)
    y_range: tuple[float, float] | None = None  # fixed (e.g. 0..1 for NMI and purity), else from the data
    bars: list[tuple[str, float]] = field(default_factory=list)


def _points(rows: list[Mapping[str, Any]], x: str, y: str) -> list[tuple[float, float]]:
    return [(float(r[x]), float(r[y])) for r in rows if r.get(y) is not None and r.get(x) is not None]


def panels(rows: Mapping[str, list[Mapping[str, Any]]]) -> list[Panel]:
    """What to draw from the plot rows (:func:`xdc_core.plots.plot_rows`); panels without data are left out."""
    names = [n.removeprefix("clusters_") for n in rows if n.startswith("clusters_") and n != "clusters_cross_modal"]

    def lines(spec: list[tuple[str, str, str]], x: str = "iteration") -> list[Series]:
        found = [Series(label, _points(rows.get(table, []), x, y)) for table, y, label in spec]
        return [s for s in found if s.points]

    quality = lines([(f"clusters_{n}", f, f"{n} {f.replace('_', ' ')}")
                     for n in names for f in ("purity", "nmi_labels", "nmi_previous")])
    agreement = lines([("clusters_cross_modal", "nmi", "video-audio NMI"),
                       ("clusters_cross_modal", "nmi_chance", "its chance level")])
    sizes = lines([(f"clusters_{n}", f"sizes_{f}", f"{n} {f}") for n in names for f in ("min", "median", "max")])
    modalities = [n.removeprefix("loss_") for n in rows if n.startswith("loss_")]
    loss = lines([(f"loss_{m}", f, f"{m} {f.replace('_', ' ')}") for m in modalities
                  for f in ("train_loss", "val_loss")], x="epoch")
    out = [Panel("cluster quality (vs labels; vs previous iteration)", "iteration", quality, (0.0, 1.0)),
           Panel("video-audio cluster agreement", "iteration", agreement, (0.0, 1.0)),
           Panel("cluster sizes (videos)", "iteration", sizes),
           Panel("pseudo-label loss", "epoch (all iterations)", loss)]
    probe = [(r["encoder"], float(r["top1"])) for r in rows.get("probe", []) if r.get("top1") is not None]
    out.append(Panel("linear probe top-1", bars=probe))
    return [p for p in out if p.series or p.bars]


def render_png(chart: list[Panel], columns: int = 2) -> bytes:
    """The panels in a grid of ``columns``, each ``PANEL_W`` x ``PANEL_H`` pixels, as PNG bytes."""
    from matplotlib.figure import Figure  # not pyplot: no global figure state, no GUI backend

    rows = max(1, math.ceil(len(chart) / columns))
    fig = Figure(figsize=(columns * PANEL_W / DPI, rows * PANEL_H / DPI), dpi=DPI, layout="constrained")
    cells = fig.subfigures(rows, columns, squeeze=False).ravel()  # each panel laid out on its own
    for cell, p in zip(cells, chart, strict=False):
        ax = cell.add_subplot()
        (_draw_bars if p.bars else _draw_lines)(ax, p)
        ax.set_title(p.title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version stamp: the same data, the same bytes
    return buf.getvalue()


def _draw_lines(ax: Any, p: Panel) -> None:
    from matplotlib.ticker import MaxNLocator

    for s in p.series:
        xs, ys = zip(*s.points, strict=True)
        ax.plot(xs, ys, marker="o", markersize=4, linewidth=2, label=s.label)  # markers: one point still shows
    if p.y_range is not None:
        ax.set_ylim(*p.y_range)
    if all(float(x).is_integer() for s in p.series for x, _ in s.points):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # iterations and epochs: no 1.5
    ax.set_xlabel(p.x_label, fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=2, fontsize=8, frameon=False)


def _draw_bars(ax: Any, p: Panel) -> None:
    labels, values = zip(*p.bars, strict=True)
    bars = ax.barh(labels, values, color=["C7" if "random" in label else "C0" for label in labels])
    ax.bar_label(bars, fmt="%.3f", fontsize=8, padding=3)
    ax.invert_yaxis()  # the first bar on top
    ax.set_xlim(0, 1.15)  # top-1 is a fraction; room for the value labels
    ax.tick_params(labelsize=8)


def curves_html(title: str, png: bytes) -> str:
    """A self-contained page showing the curves (the PNG inlined): nothing else to fetch."""
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'\">"
            f"<title>{html.escape(title)}</title></head><body style='font-family:sans-serif'>"
            f"<h1 style='font-size:1.3em'>{html.escape(title)}</h1><img alt='learning curves' src='{uri}'>"
            "</body></html>\n")
