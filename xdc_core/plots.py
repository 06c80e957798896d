"""Plot data of a run for ``dvc plots show``: JSON lists of rows, ``null`` where a value does not exist.

* ``clusters_{video,audio|joint}.json``: per iteration, cluster sizes (min/median/max), NMI with
  the previous iteration's clusters, purity and NMI against the labels;
* ``clusters_cross_modal.json``: per iteration, the NMI between the video and the audio clusters
  and its chance level;
* ``loss_{video,audio}.json``: per epoch (counted over all iterations), the pseudo-label
  training loss and held-out loss, with the iteration and its epoch;
* ``probe.json``: linear-probe top-1 of the pretrained and the random-init encoders (and
  finetuning when enabled);
* ``curves.png``: all of them drawn as learning curves (:mod:`xdc_core.curves`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import MODALITIES
from .curves import panels, render_png
from .layout import CROSS_MODAL
from .store import atomic_write, write_json

_CLUSTER_FIELDS = ("k", "sizes_min", "sizes_median", "sizes_max", "nmi_previous", "purity", "nmi_labels", "objective")


def write_plots(out: Path, iterations: list[dict[str, Any]], metrics: dict[str, Any] | None) -> list[Path]:
    """Write the plot data of ``iterations`` (:meth:`RunLayout.iteration_stats` of each) and of the
    evaluation ``metrics`` (None: not evaluated) into ``out``, and the curves drawn from it
    (curves.png); returns the files written."""
    rows = plot_rows(iterations, metrics)
    written = []
    for name, table in rows.items():
        write_json(Path(out) / f"{name}.json", table)
        written.append(Path(out) / f"{name}.json")
    with atomic_write(Path(out) / "curves.png") as f:
        f.write(render_png(panels(rows)))
    return [*written, Path(out) / "curves.png"]


def plot_rows(iterations: list[dict[str, Any]], metrics: dict[str, Any] | None) -> dict[str, list[dict[str, Any]]]:
    """The plot data, file name (without .json) → rows. An iteration without ``train`` (a
    Kubeflow k-means history) has no loss rows."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for it in iterations:
        for name, c in it["clusters"].items():
            fields = ("nmi", "nmi_chance") if name == CROSS_MODAL else _CLUSTER_FIELDS
            rows.setdefault(f"clusters_{name}", []).append({"iteration": it["iteration"]} | {f: c.get(f) for f in fields})
    for m in MODALITIES:
        epoch = 0
        for it in iterations:
            r = it.get("train", {}).get(m) or {}
            tl, vl = r.get("train_loss") or [], r.get("val_loss") or []
            for e in range(max(len(tl), len(vl))):
                epoch += 1
                rows.setdefault(f"loss_{m}", []).append({
                    "epoch": epoch, "iteration": it["iteration"], "iteration_epoch": e + 1,
                    "train_loss": tl[e] if e < len(tl) else None, "val_loss": vl[e] if e < len(vl) else None})
    if metrics is not None:
        rows["probe"] = _accuracy_rows(metrics)
    return rows


def _accuracy_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    method = str(metrics.get("method", "pretrained")).upper()
    rows = []
    for key, label in (("probe", f"{method} linear probe"), ("baseline_random", "random init linear probe"),
                       ("finetune", f"{method} finetune"), ("baseline_random_finetune", "random init finetune")):
        for m, r in (metrics.get(key) or {}).items():
            rows.append({"encoder": f"{m}: {label}", "modality": m, "model": label, "top1": r["top1"]})
    return rows
