"""The learning curves of a run as one PNG, drawn with PIL from the plot data of :mod:`xdc_core.plots`.

Per iteration: cluster quality (purity and NMI against the labels, NMI with the previous
iteration), the video–audio cluster agreement against its chance level, and the cluster sizes;
per epoch, the pseudo-label losses; and the linear-probe top-1 when the run was evaluated. PIL
(a torchvision dependency) instead of matplotlib (a dev-only dependency): every image that runs
a step can draw them.

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

PANEL_W, PANEL_H = 480, 320
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 52, 14, 28, 74  # the bottom margin holds the x axis and the legend
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]  # tab10: tells 10 series apart


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


def _ticks(lo: float, hi: float, integer: bool) -> list[float]:
    """About 5 round tick values covering lo..hi (whole numbers only when ``integer``)."""
    span = hi - lo
    raw = span / 5 if span > 0 else 1.0
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if step * m >= raw)
    if integer:
        step = max(1.0, round(step))
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _range(values: list[float], fixed: tuple[float, float] | None) -> tuple[float, float]:
    if fixed is not None:
        return fixed
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or max(abs(hi) * 0.1, 0.5)  # a flat line still gets a visible band
    return lo - pad, hi + pad


def _draw_lines(draw: Any, font: Any, p: Panel, x0: int, y0: int) -> None:
    left, top = x0 + MARGIN_L, y0 + MARGIN_T
    right, bottom = x0 + PANEL_W - MARGIN_R, y0 + PANEL_H - MARGIN_B
    xs = [x for s in p.series for x, _ in s.points]
    ys = [y for s in p.series for _, y in s.points]
    xlo, xhi = (min(xs), max(xs)) if max(xs) > min(xs) else (min(xs) - 0.5, max(xs) + 0.5)
    ylo, yhi = _range(ys, p.y_range)

    def at(x: float, y: float) -> tuple[float, float]:
        return left + (x - xlo) / (xhi - xlo) * (right - left), bottom - (y - ylo) / (yhi - ylo) * (bottom - top)

    for t in _ticks(ylo, yhi, False):
        _, ty = at(xlo, t)
        draw.line([(left, ty), (right, ty)], fill=(232, 232, 232))
        draw.text((left - 4, ty), f"{t:.3g}", fill=(80, 80, 80), font=font, anchor="rm")
    integer = all(float(x).is_integer() for x in xs)
    for t in _ticks(xlo, xhi, integer):
        tx, _ = at(t, ylo)
        draw.line([(tx, bottom), (tx, bottom + 3)], fill=(80, 80, 80))
        draw.text((tx, bottom + 5), f"{t:g}", fill=(80, 80, 80), font=font, anchor="mt")
    draw.rectangle([left, top, right, bottom], outline=(160, 160, 160))
    draw.text(((left + right) / 2, bottom + 20), p.x_label, fill=(80, 80, 80), font=font, anchor="mt")
    lx, ly = left, bottom + 38
    for i, s in enumerate(p.series):
        colour = COLOURS[i % len(COLOURS)]
        pts = [at(x, y) for x, y in s.points]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for px, py in pts:  # markers: a one-iteration run still shows its values
            draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=colour)
        width = 18 + draw.textlength(s.label, font=font) + 14
        if lx + width > right and lx > left:
            lx, ly = left, ly + 16
        draw.line([(lx, ly + 6), (lx + 14, ly + 6)], fill=colour, width=3)
        draw.text((lx + 18, ly), s.label, fill=(40, 40, 40), font=font)
        lx += width


def _draw_bars(draw: Any, font: Any, p: Panel, x0: int, y0: int) -> None:
    label_w = max(draw.textlength(label, font=font) for label, _ in p.bars) + 8
    left, right = x0 + 8 + label_w, x0 + PANEL_W - MARGIN_R - 40
    row = min(26, (PANEL_H - MARGIN_T - 10) // len(p.bars))
    for i, (label, value) in enumerate(p.bars):
        top = y0 + MARGIN_T + i * row
        draw.text((left - 6, top + row / 2), label, fill=(40, 40, 40), font=font, anchor="rm")
        end = left + max(0.0, min(1.0, value)) * (right - left)
        draw.rectangle([left, top + 3, end, top + row - 3], fill=COLOURS[0 if "random" not in label else 7])
        draw.text((end + 4, top + row / 2), f"{value:.3f}", fill=(40, 40, 40), font=font, anchor="lm")


def render_png(chart: list[Panel], columns: int = 2) -> bytes:
    """The panels in a grid of ``columns``, as PNG bytes."""
    from PIL import Image, ImageDraw, ImageFont

    rows = max(1, math.ceil(len(chart) / columns))
    img = Image.new("RGB", (PANEL_W * columns, PANEL_H * rows), "white")
    draw = ImageDraw.Draw(img)
    font, title = ImageFont.load_default(size=12), ImageFont.load_default(size=14)
    for i, p in enumerate(chart):
        x0, y0 = (i % columns) * PANEL_W, (i // columns) * PANEL_H
        draw.text((x0 + PANEL_W / 2, y0 + 6), p.title, fill=(0, 0, 0), font=title, anchor="mt")
        (_draw_bars if p.bars else _draw_lines)(draw, font, p, x0, y0)
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=True)
    return buf.getvalue()


def curves_html(title: str, png: bytes) -> str:
    """A self-contained page showing the curves (the PNG inlined): nothing else to fetch."""
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'\">"
            f"<title>{html.escape(title)}</title></head><body style='font-family:sans-serif'>"
            f"<h1 style='font-size:1.3em'>{html.escape(title)}</h1><img alt='learning curves' src='{uri}'>"
            "</body></html>\n")
