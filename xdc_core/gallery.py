"""The cluster gallery of one k-means iteration: what the clusters hold, as one self-contained HTML page.

Deep clustering is judged by looking at its clusters (the paper's Figures 2-3): which videos and
sounds ended up together, and whether the clusters move from nuisance (background colour,
loudness) to content over the iterations. For each clustering of the iteration (video and audio,
or joint for CDC) the page lists every cluster with its size and, when the videos are labelled,
its purity and majority label; for the first ``max_shown`` clusters in that order it shows the
``per_cluster`` videos nearest the cluster's centre: the middle frame of the clip the features
were computed from, and the log-mel spectrogram of its audio window.

Cost is bounded whatever N and k: at most ``max_shown * per_cluster`` videos are read per
clustering (one frame and one audio window each), and ranking touches only the shown clusters'
members. Images are inlined as ``data:`` URIs and a Content-Security-Policy forbids anything
else, so the page opens anywhere, offline (a KFP UI, a laptop, an e-mail attachment).

Pure functions compute and render; :class:`MediaReader` and :func:`write_gallery` do the I/O.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .config import Config, DataConfig
from .kmeans import l2_normalize
from .layout import CROSS_MODAL
from .store import atomic_write

PER_CLUSTER = 6  # thumbnails per shown cluster
MAX_SHOWN = 64  # clusters per clustering shown with thumbnails; every cluster is listed
THUMB_PX = 96  # frames larger than this (longest side) are scaled down before encoding

SortKey = Literal["purity", "size"]


# -- what the clusters hold (pure) ---------------------------------------------------------------


@dataclass(frozen=True)
class ClusterSummary:
    """One cluster as the page lists it."""

    cluster: int
    size: int
    majority: int | None  # the most frequent label among its labelled videos (class index)
    purity: float | None  # the fraction of its labelled videos that carry the majority label


def summarize(assignments: np.ndarray, labels: np.ndarray | None, k: int) -> list[ClusterSummary]:
    """Size, majority label and purity of each of the ``k`` clusters (labels: class index, -1 unknown)."""
    assignments = np.asarray(assignments, dtype=np.int64)
    sizes = np.bincount(assignments, minlength=k)
    known = None if labels is None else np.asarray(labels) >= 0
    if known is None or not known.any():
        return [ClusterSummary(c, int(sizes[c]), None, None) for c in range(k)]
    lab = np.asarray(labels, dtype=np.int64)[known]
    classes = int(lab.max()) + 1
    # one bincount over (cluster, label) pairs: O(N + k * classes), no Python loop over videos
    counts = np.bincount(assignments[known] * classes + lab, minlength=k * classes).reshape(k, classes)
    labelled = counts.sum(axis=1)
    return [
        ClusterSummary(c, int(sizes[c]), int(counts[c].argmax()) if labelled[c] else None,
                       float(counts[c].max() / labelled[c]) if labelled[c] else None)
        for c in range(k)
    ]


def order(summaries: list[ClusterSummary], by: SortKey) -> list[ClusterSummary]:
    """Purest first (then largest), or largest first; ties by cluster number, so the order is stable."""
    if by == "purity":
        return sorted(summaries, key=lambda s: (-(s.purity if s.purity is not None else -1.0), -s.size, s.cluster))
    return sorted(summaries, key=lambda s: (-s.size, s.cluster))


def typical_members(
    features: np.ndarray, assignments: np.ndarray, clusters: list[int], n: int
) -> dict[int, np.ndarray]:
    """Per cluster of ``clusters``, the rows of its ``n`` members nearest its centre, nearest first.

    The centre is the mean of the members' L2-normalised features and nearness is cosine
    similarity to it: the space k-means clusters in (before PCA-whitening when
    ``cluster.pca_dim`` > 0, where the ranking is an approximation of the whitened one; the
    members are the cluster's either way). Only the given clusters' members are read, so the
    cost is bounded by their sizes, not by N.
    """
    assignments = np.asarray(assignments)
    rows_by_cluster = np.argsort(assignments, kind="stable")
    starts = np.searchsorted(assignments[rows_by_cluster], clusters, side="left")
    ends = np.searchsorted(assignments[rows_by_cluster], clusters, side="right")
    out = {}
    for c, s, e in zip(clusters, starts, ends, strict=True):
        rows = rows_by_cluster[s:e]
        if rows.size == 0:
            out[c] = rows
            continue
        x = l2_normalize(features[rows])
        similarity = x @ x.mean(axis=0)
        # stable: equal similarities (duplicate videos) keep index order, so the page is reproducible
        out[c] = rows[np.argsort(-similarity, kind="stable")[:n]]
    return out


# -- images (pure) -------------------------------------------------------------------------------

# viridis at 5 stops (matplotlib's values), interpolated: perceptually ordered and colour-blind safe
_VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], np.float64)
PALETTE = np.stack([np.interp(np.linspace(0, 4, 256), np.arange(5), _VIRIDIS[:, ch]) for ch in range(3)], 1)


def data_uri(mime: str, payload: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def frame_image(rgb: np.ndarray, max_px: int = THUMB_PX) -> str:
    """An ``[H, W, 3]`` uint8 frame as a JPEG data URI, scaled down to ``max_px`` when larger."""
    from PIL import Image  # a torchvision dependency: always installed with the library

    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    if max(img.size) > max_px:
        img.thumbnail((max_px, max_px), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80, optimize=True)
    return data_uri("image/jpeg", buf.getvalue())


def mel_image(mel: np.ndarray, lo: float, hi: float) -> str:
    """A ``[mels, frames]`` log-mel as a JPEG data URI: low frequencies at the bottom, ``lo``..``hi``
    mapped onto viridis. One scale for every spectrogram of a page, so loudness stays comparable."""
    from PIL import Image

    scaled = (np.asarray(mel, np.float64) - lo) / max(hi - lo, 1e-9)
    index = np.clip(np.round(scaled * 255), 0, 255).astype(np.uint8)[::-1]
    # JPEG, not PNG: a real spectrogram is noise to PNG (twice the bytes); viridis's luminance rises
    # monotonically, so JPEG's halved colour resolution keeps the values readable.
    img = Image.fromarray(PALETTE.round().astype(np.uint8)[index], "RGB")
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return data_uri("image/jpeg", buf.getvalue())


def mel_scale(mels: list[np.ndarray]) -> tuple[float, float]:
    """The page's log-mel colour range: the 1st to 99th percentile of all its spectrograms."""
    if not mels:
        return 0.0, 1.0
    values = np.concatenate([np.asarray(m, np.float64).ravel() for m in mels])
    lo, hi = np.percentile(values, [1, 99])
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


# -- the page (pure) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Thumb:
    """One video in a cluster's strip."""

    video: int  # its index in the decoded dataset
    name: str  # its id
    label: int | None
    frame: str  # data URI
    mel: str  # data URI


@dataclass(frozen=True)
class Section:
    """One clustering (video, audio or joint) of the page."""

    name: str
    stats: Mapping[str, Any]  # its entry in kmeans.json
    clusters: list[ClusterSummary]  # every cluster, in display order
    shown: dict[int, list[Thumb]]  # cluster → its strip, for the clusters shown in full
    sort: SortKey


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .3em}h2{margin:1.5em 0 .3em;border-bottom:1px solid #ccc}
h3{font-size:1em;margin:.2em 0}table{border-collapse:collapse;margin:.5em 0}
td,th{padding:2px 8px;border-bottom:1px solid #e4e4e4;text-align:right}th:first-child,td:first-child{text-align:left}
.cluster{display:inline-block;vertical-align:top;margin:6px;padding:6px;background:#fff;border:1px solid #ddd;
border-radius:4px}
.strip{display:flex;gap:4px}figure{margin:0;width:72px;text-align:center}
figure img{width:72px;display:block;image-rendering:pixelated}img.frame{height:72px;object-fit:cover;margin-bottom:2px}
figcaption{font-size:11px;overflow:hidden;white-space:nowrap;text-overflow:ellipsis}
.off{color:#b00}.note{color:#555;font-size:.9em}
"""

# Only inline styles and data: images may load: nothing leaves the machine that opens the page.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


_ORDER = {"purity": "purest first", "size": "largest first"}


def _num(value: Any, fmt: str = ".3f") -> str:
    return "–" if value is None else format(value, fmt) if isinstance(value, float) else str(value)


def _label(classes: list[str], label: int | None) -> str:
    return "–" if label is None or label < 0 or label >= len(classes) else classes[label]


def _stats_table(sections: list[Section]) -> str:
    head = "<tr><th>clustering</th><th>sizes min / median / max</th><th>NMI with previous iteration</th>" \
           "<th>purity</th><th>NMI with labels</th></tr>"
    rows = "".join(
        f"<tr><td><a href='#{html.escape(s.name)}'>{html.escape(s.name)}</a></td>"
        f"<td>{_num(s.stats.get('sizes_min'))} / {_num(s.stats.get('sizes_median'), 'g')} / "
        f"{_num(s.stats.get('sizes_max'))}</td><td>{_num(s.stats.get('nmi_previous'))}</td>"
        f"<td>{_num(s.stats.get('purity'))}</td><td>{_num(s.stats.get('nmi_labels'))}</td></tr>"
        for s in sections
    )
    return f"<table class='stats'>{head}{rows}</table>"


def _strip(thumbs: list[Thumb], majority: int | None, classes: list[str]) -> str:
    figures = []
    for t in thumbs:
        label = _label(classes, t.label)
        off = " class='off'" if majority is not None and t.label is not None and t.label != majority else ""
        title = html.escape(f"video {t.video} ({t.name}), label {label}", quote=True)
        figures.append(f"<figure title='{title}'><img class='frame' alt='frame of video {t.video}' src='{t.frame}'>"
                       f"<img class='mel' alt='log-mel of video {t.video}' src='{t.mel}'>"
                       f"<figcaption{off}>{html.escape(label)}</figcaption></figure>")
    return f"<div class='strip'>{''.join(figures)}</div>"


def _section(s: Section, classes: list[str]) -> str:
    name = html.escape(s.name)
    cards = []
    for c in s.clusters:
        if c.cluster not in s.shown:
            continue
        majority = html.escape(_label(classes, c.majority))
        purity = f" · purity {c.purity:.2f} ({majority})" if c.purity is not None else ""
        cards.append(f"<div class='cluster' id='{name}-{c.cluster}' data-cluster='{c.cluster}' data-size='{c.size}'>"
                     f"<h3>cluster {c.cluster} · {c.size} video{'s' if c.size != 1 else ''}{purity}</h3>"
                     f"{_strip(s.shown[c.cluster], c.majority, classes)}</div>")
    rows = "".join(
        f"<tr data-cluster='{c.cluster}'><td>"
        + (f"<a href='#{name}-{c.cluster}'>{c.cluster}</a>" if c.cluster in s.shown else str(c.cluster))
        + f"</td><td>{c.size}</td><td>{_num(c.purity)}</td><td>{html.escape(_label(classes, c.majority))}</td></tr>"
        for c in s.clusters
    )
    hidden = len(s.clusters) - len(s.shown)
    more = f"; the other {hidden} are listed below" if hidden else ""
    return (f"<section id='{name}' data-clustering='{name}'><h2>{name} clusters</h2>"
            f"<p class='note'>{len(s.clusters)} clusters, {_ORDER[s.sort]}; "
            f"thumbnails of the {len(s.shown)} first{more}. "
            f"Each strip: the videos nearest the cluster's centre, nearest first (labels in red differ from the "
            f"majority).</p>{''.join(cards)}"
            f"<details><summary>all {len(s.clusters)} {name} clusters</summary><table>"
            f"<tr><th>cluster</th><th>videos</th><th>purity</th><th>majority label</th></tr>{rows}</table>"
            f"</details></section>")


def render(
    iteration: int, method: str, k: int, videos: int, sections: list[Section], classes: list[str],
    cross_modal: Mapping[str, Any] | None, mel_range: tuple[float, float],
) -> str:
    """The gallery page's HTML: a header with the iteration's statistics, then one section per clustering."""
    title = f"{method.upper()} clusters, iteration {iteration}"
    agreement = ""
    if cross_modal:
        agreement = (f"<p>video–audio cluster agreement: NMI {_num(cross_modal.get('nmi'))} "
                     f"(chance level {_num(cross_modal.get('nmi_chance'))})</p>")
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{_CSP}\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><p>k = {k} clusters of {videos} videos"
        f"{'; purity is against the labels, which pretraining never sees' if classes else ''}.</p>"
        f"{_stats_table(sections)}{agreement}"
        f"<p class='note'>Frames: the middle frame of the clip each video's features come from. Spectrograms: "
        f"log-mel of its audio window, low frequencies at the bottom, one colour scale for the page "
        f"({mel_range[0]:.1f} to {mel_range[1]:.1f}).</p></header>"
        + "".join(_section(s, classes) for s in sections)
        + "</body></html>\n"
    )


# -- I/O: the decoded videos, the file -----------------------------------------------------------


class MediaReader:
    """The middle frame and the log-mel of a decoded dataset's videos, by video index."""

    def __init__(self, root: Path, data: DataConfig) -> None:
        from .dataset import ClipDataset  # torch: only when a gallery is written

        # Without the clip cache: building it for all N videos would cost far more than the few
        # hundred reads a gallery needs.
        self._data = data
        self._dataset = ClipDataset(root, data.model_copy(update={"clip_cache": 0}), "eval", None, ("audio",), clips=1)
        self._row = {e.index: row for row, e in enumerate(self._dataset.entries)}
        self.classes = self._dataset.classes

    def name(self, video: int) -> str:
        return self._dataset.entries[self._row[video]].id

    def __call__(self, video: int) -> tuple[np.ndarray, np.ndarray]:
        """``(frame [H, W, 3] uint8, log-mel [mels, frames])`` at the middle clip, the one embed reads."""
        from .media.file import MediaFile
        from .media.timing import uniform_clip_starts

        d, row = self._data, self._row[video]
        entry = self._dataset.entries[row]
        start = uniform_clip_starts(entry.duration, d.clip_seconds, 1)[0]
        mel = self._dataset.read(row, [start], "center", None)["audio"][0, 0].numpy()
        with MediaFile(self._dataset.root / "video" / f"{entry.id}.mp4") as m:
            # the clip's middle frame, the centre square of the scaled frame (what the encoder crops from)
            clip = m.video_clip(start + d.clip_seconds / 2, 1, d.fps, d.short_side, d.short_side, "center")
        return clip[:, 0].transpose(1, 2, 0), mel


def build_sections(
    clusterings: Mapping[str, tuple[np.ndarray, np.ndarray]],
    labels: np.ndarray,
    index: np.ndarray,
    stats: Mapping[str, Any],
    k: int,
    read: Callable[[int], tuple[np.ndarray, np.ndarray]],
    name: Callable[[int], str],
    per_cluster: int = PER_CLUSTER,
    max_shown: int = MAX_SHOWN,
) -> tuple[list[Section], tuple[float, float]]:
    """The page's sections and mel colour range. ``clusterings``: name → (features clustered
    [N, d], assignments [N]); ``index``: each row's video index; ``read``: video index → (frame,
    log-mel), called from several threads. Each video is read at most once."""
    labelled = bool((np.asarray(labels) >= 0).any())
    sort: SortKey = "purity" if labelled else "size"
    picked: dict[str, tuple[list[ClusterSummary], dict[int, np.ndarray]]] = {}
    for cname, (features, assignments) in clusterings.items():
        ordered = order(summarize(assignments, labels if labelled else None, k), sort)
        picked[cname] = ordered, typical_members(features, assignments, [c.cluster for c in ordered[:max_shown]],
                                                 per_cluster)
    videos = sorted({int(index[r]) for _, members in picked.values() for rows in members.values() for r in rows})
    # threads: FFmpeg decodes without the GIL, and a gallery's reads are independent
    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        media = dict(zip(videos, pool.map(read, videos), strict=True))
    mel_range = mel_scale([mel for _, mel in media.values()])
    images = {v: (frame_image(frame), mel_image(mel, *mel_range)) for v, (frame, mel) in media.items()}
    sections = []
    for cname, (ordered, members) in picked.items():
        shown = {c: [Thumb(int(index[r]), name(int(index[r])), int(labels[r]) if labels[r] >= 0 else None,
                           *images[int(index[r])]) for r in rows]
                 for c, rows in members.items()}
        sections.append(Section(cname, stats.get(cname, {}), ordered, shown, sort))
    return sections, mel_range


def write_gallery(
    out: Path,
    decoded: Path,
    cfg: Config,
    iteration: int,
    clusterings: Mapping[str, tuple[np.ndarray, np.ndarray]],
    labels: np.ndarray,
    index: np.ndarray,
    stats: Mapping[str, Any],
    per_cluster: int = PER_CLUSTER,
    max_shown: int = MAX_SHOWN,
) -> Path:
    """Write the gallery of one k-means iteration to ``out`` (atomically). ``stats``: the
    iteration's statistics as kmeans.json holds them (per clustering, and ``cross_modal``)."""
    reader = MediaReader(Path(decoded), cfg.data)
    sections, mel_range = build_sections(clusterings, labels, index, stats, cfg.cluster.k, reader, reader.name,
                                         per_cluster, max_shown)
    page = render(iteration, cfg.cluster.method, cfg.cluster.k, len(index), sections, reader.classes,
                  stats.get(CROSS_MODAL), mel_range)
    with atomic_write(out) as f:
        f.write(page.encode("utf-8"))
    return Path(out)
