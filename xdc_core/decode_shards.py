"""Sharded decode: one manifest decoded by several tasks side by side, then merged into one dataset.

    plan_shards (check the plan on the whole manifest) → decode_shard × N → merge_shards

Shard ``s`` of ``n`` holds the manifest rows ``s, s+n, s+2n, …`` (:func:`shard_rows`). Each shard
is an ordinary decoded folder (the format of :mod:`xdc_core.decode`) of its rows only, without a
plan check: a shard alone may hold fewer videos than ``cluster.k``. The merge builds the folder
the unsharded decode writes: ``index.csv`` in manifest order (positions = video index),
``quarantine.csv`` in manifest order, ``summary.json`` with the merged counts, ``meta.json``, the
journal, and every shard's ``video/`` and ``audio/`` files in one place (hard links where the
filesystem allows, else copies: the shards are the upstream tasks' artifacts and stay intact).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from hashlib import sha1
from pathlib import Path
from typing import Any, TypeVar

from .config import Config
from .decode import (
    DatasetMismatch,
    _prepare_out_dir,
    _write_outputs,
    decode_rows,
    read_journal,
)
from .errors import ConfigError
from .manifest import ManifestRow, read_manifest
from .sample_data import SampleSpec
from .store import atomic_write, write_json

T = TypeVar("T")


def shard_rows(rows: Sequence[T], shard: int, shards: int) -> list[T]:
    """The rows of shard ``shard`` of ``shards``: every ``shards``-th row from row ``shard``.

    Striding, not contiguous blocks: manifests are often ordered by class or by source (UCF101
    lists its videos class by class, and a class's videos share a length), so blocks would give
    one shard the long videos and another the short ones; strided shards get a like mix. It also
    makes shard ``s`` non-empty exactly when ``s`` < the number of rows. The merge restores the
    manifest order, so the choice does not change the dataset.
    """
    if shards < 1:
        raise ConfigError(f"decode shards must be at least 1 (got {shards})")
    if not 0 <= shard < shards:
        raise ConfigError(f"shard must be between 0 and {shards - 1} for {shards} shards (got {shard})")
    return list(rows[shard::shards])


def plan_shards(manifest: str | Path, shards: int, cfg: Config, evaluate: bool, pretrain: bool = True) -> list[int]:
    """Check the plan on the whole manifest (what :func:`~xdc_core.steps.decode_step` checks first)
    and return the numbers of the shards to decode: ``0 … shards-1``, fewer when the manifest has
    fewer videos than ``shards`` (the others would be empty)."""
    # steps imports torch, which the shard functions below do not need
    from .steps import check_plan

    if shards < 1:
        raise ConfigError(f"decode shards must be at least 1 (got {shards})")
    rows = read_manifest(manifest)
    check_plan([(r.label, r.split) for r in rows], cfg, evaluate, str(manifest), pretrain)
    return list(range(min(shards, len(rows))))


def decode_shard(
    manifest: str | Path, shard: int, shards: int, out: Path, cfg: Config, progress: bool = True
) -> dict[str, Any]:
    """Decode shard ``shard`` of ``shards`` of ``manifest`` into ``out`` (resuming, as
    :func:`~xdc_core.decode.decode_dataset`); no plan check. Returns the shard's summary."""
    rows = shard_rows(read_manifest(manifest), shard, shards)
    return decode_rows(rows, Path(out), cfg, progress)


# -- the merge -------------------------------------------------------------------------------------


def _shard_meta(shard_dirs: Sequence[Path]) -> dict[str, Any]:
    """The decode settings every shard was written with; :class:`DatasetMismatch` naming the
    first shard whose settings differ from the first shard's, or that is no decoded folder."""
    if not shard_dirs:
        raise DatasetMismatch("no decoded shards to merge")
    metas = []
    for d in shard_dirs:
        path = d / "meta.json"
        if not path.is_file():
            raise DatasetMismatch(f"shard {d} is not a decoded dataset: {path.name} is missing")
        metas.append(json.loads(path.read_text()))
    for d, meta in zip(shard_dirs[1:], metas[1:], strict=True):
        diff = sorted(k for k in metas[0].keys() | meta.keys() if metas[0].get(k) != meta.get(k))
        if diff:
            changes = ", ".join(f"{k}: {metas[0].get(k)} in {shard_dirs[0]}, {meta.get(k)} here" for k in diff)
            raise DatasetMismatch(f"shard {d} was decoded with other settings than the first shard ({changes}); "
                                  "decode every shard with the same settings")
    return metas[0]


def _link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` as a hard link to ``src`` (no copy of the data), or a copy where the two are on
    different filesystems or the filesystem has no hard links. Never moves: ``src`` is an
    upstream task's artifact, which a cached or retried task may read again."""
    if dst.exists():  # a rerun of the merge into the same folder
        if dst.samefile(src):
            return
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:  # EXDEV (another filesystem), EPERM/ENOTSUP (no hard links), EMLINK
        with open(src, "rb") as fin, atomic_write(dst) as fout:  # a killed copy leaves no file under dst
            shutil.copyfileobj(fin, fout)


def merge_shards(shard_dirs: Sequence[str | Path], rows: Sequence[ManifestRow], out: str | Path) -> dict[str, Any]:
    """Merge the decoded shards ``shard_dirs`` of the manifest ``rows`` (all of them, in manifest
    order) into ``out``: the folder the unsharded decode of ``rows`` writes. Returns its summary.

    Raises :class:`~xdc_core.decode.DatasetMismatch` naming the shard at fault when the shards'
    settings differ, when a row is in no shard or in two, or when a shard lacks an accepted
    video's files.
    """
    dirs = [Path(d) for d in shard_dirs]
    out = Path(out)
    settings = _shard_meta(dirs)
    wanted = {r.resolved for r in rows}
    records: dict[str, dict[str, Any]] = {}
    owner: dict[str, Path] = {}
    for d in dirs:
        for resolved, rec in read_journal(d / "progress.jsonl").items():
            if resolved not in wanted:
                continue  # a shard folder reused from another manifest: not this dataset's
            if resolved in owner:
                raise DatasetMismatch(f"shard {d} and shard {owner[resolved]} both decoded {resolved}; "
                                      "the shards overlap: decode them from the same manifest and shard count")
            records[resolved], owner[resolved] = rec, d
    missing = [r for r in rows if r.resolved not in records]
    if missing:
        raise DatasetMismatch(f"{len(missing)} of {len(rows)} videos are in no shard, e.g. {missing[0].path} "
                              f"(manifest line {missing[0].line}); shards given: {', '.join(map(str, dirs))}")
    _prepare_out_dir(out, settings)
    for r in rows:
        rec = records[r.resolved]
        if rec["status"] != "accepted":
            continue
        for sub, ext in (("video", "mp4"), ("audio", "npy")):
            src = owner[r.resolved] / sub / f"{rec['id']}.{ext}"
            if not src.is_file():
                raise DatasetMismatch(f"shard {owner[r.resolved]} lacks {sub}/{src.name} of {r.resolved}, "
                                      "which its journal says was accepted; decode that shard again")
            _link_or_copy(src, out / sub / src.name)
    with atomic_write(out / "progress.jsonl") as f:  # so `xdc decode` on the merged folder resumes
        f.write("".join(json.dumps(records[r.resolved]) + "\n" for r in rows).encode())
    summary = _write_outputs(out, list(rows), records)
    summary |= _merged_timing(dirs) | {"settings": settings}
    write_json(out / "summary.json", summary)
    return summary


def _merged_timing(dirs: Sequence[Path]) -> dict[str, Any]:
    """The shards' work, summed: ``elapsed_s`` is decode-task time, not wall time (how much the
    shards overlapped depends on the parallelism limit), so ``videos_per_s`` is the rate of one
    task, comparable to an unsharded decode's. Each shard's own figures under ``shards``."""
    summaries = [json.loads((d / "summary.json").read_text()) if (d / "summary.json").is_file() else {}
                 for d in dirs]
    shards = [{k: s.get(k) for k in ("total", "decoded_now", "resumed", "elapsed_s", "videos_per_s")}
              for s in summaries]
    decoded_now = sum(s["decoded_now"] or 0 for s in shards)
    elapsed = sum(s["elapsed_s"] or 0.0 for s in shards)
    workers = {s.get("workers") for s in summaries}
    return {
        "resumed": sum(s["resumed"] or 0 for s in shards),
        "decoded_now": decoded_now,
        "elapsed_s": round(elapsed, 3),
        "videos_per_s": round(decoded_now / elapsed, 3) if decoded_now and elapsed else None,
        "workers": workers.pop() if len(workers) == 1 else None,  # per shard task
        "shards": shards,
    }


def merge_step(
    shard_dirs: Sequence[str | Path], manifest: str | Path, out: Path, cfg: Config, evaluate: bool,
    pretrain: bool = True,
) -> dict[str, Any]:
    """Merge the decoded shards of ``manifest`` into ``out``, then check the plan on what was
    accepted, as :func:`~xdc_core.steps.decode_step` does after decoding. Returns the summary."""
    from .steps import check_decoded  # torch and the rest: only for this check

    summary = merge_shards(shard_dirs, read_manifest(manifest), out)
    check_decoded(out, cfg, evaluate, pretrain, source=f"{out} (after decoding)")
    return summary


def shared_sample_manifest(root: Path | None = None, spec: SampleSpec | None = None) -> Path:
    """The embedded sample dataset (``spec``; None: the default one) at one fixed path under
    ``root`` (None: the system's temporary folder), written there first if absent.

    Every task of a sharded decode reads the manifest (plan, shards, merge), each in its own pod
    or, under ``kfp.local``, side by side: at one path, their rows resolve to the same files, so
    the shards' video ids and the merge agree. Written to a temporary folder and renamed into
    place, so tasks racing to write it never see it half-written. The folder's name holds the
    version and a hash of the spec, so a changed sample is never mistaken for this one.
    """
    from xdc_core import __version__

    from .sample_data import make_sample_dataset

    spec = spec or SampleSpec()
    parent = Path(root or tempfile.gettempdir())
    tag = sha1(repr(spec).encode()).hexdigest()[:8]
    folder = parent / f"xdc-sample-{__version__}-{tag}"
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        return manifest
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=parent))
    try:
        make_sample_dataset(tmp, spec)
        os.rename(tmp, folder)  # atomic; fails if another task got there first
    except OSError:
        if not manifest.is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest
