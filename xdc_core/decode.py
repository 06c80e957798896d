"""The decode step: a manifest of raw videos → a training-ready decoded dataset.

Every listed video is probed and validated in parallel worker processes. An accepted video is
written once in a normalised form, so that training reads random clips fast and the same way
whatever the source was:

    DIR/video/<id>.mp4   H.264 at the target fps, short side = ``data.short_side``, a keyframe
                         every ``decode.keyframe_interval`` frames (a random seek decodes at most
                         that many frames before the clip; raw files often have 250-frame GOPs)
    DIR/audio/<id>.npy   int16 mono PCM at ``data.audio_rate``; sample 0 is the first video frame
                         (random windows are array slices; no audio decoding at training time)
    DIR/index.csv        accepted videos in manifest order (their position is the video index)
    DIR/quarantine.csv   ``path,reason`` for every rejected input, with a specific reason
    DIR/summary.json     counts, accepted duration, histogram of reasons, throughput
    DIR/meta.json        the decode-time settings the files were written with
    DIR/progress.jsonl   journal of finished videos: a rerun on the same DIR skips them

One bad file never aborts the run, and a worker that crashes inside FFmpeg costs only that file.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import posixpath
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from fractions import Fraction
from hashlib import sha1
from pathlib import Path
from typing import Any

import av
import numpy as np
from tqdm import tqdm

from . import store
from .config import Config, DataConfig, DecodeConfig
from .errors import InputError, XdcError
from .manifest import ManifestRow, read_manifest
from .media.errors import (
    FileMissing,
    MediaError,
    TooShort,
    Truncated,
    UnexpectedError,
    Unreadable,
    WorkerCrashed,
)
from .media.file import MediaFile, scaled_size
from .media.timing import resample_frames
from .media.x264 import reproducible_params
from .metrics import record_decoded
from .store import atomic_write, write_json
from .worker_pool import worker_pool

FORMAT_VERSION = 2  # 2: x264 without its AVX-512 kernel (byte-reproducible files, media/x264.py)
TMP_VIDEO, TMP_AUDIO = ".tmp.mp4", ".tmp.npy"  # a video's files while it is written (renamed when complete)
INDEX_COLUMNS = ("index", "id", "path", "label", "split", "duration", "frames", "width", "height", "audio_samples")


class DatasetMismatch(XdcError, ValueError):
    """An existing output folder was decoded with other settings; resuming would mix them."""


def video_id(resolved_path: str) -> str:
    """Stable file stem for a source video (so a rerun finds its earlier output)."""
    return sha1(resolved_path.encode()).hexdigest()[:16]


def decode_settings(data: DataConfig, dec: DecodeConfig) -> dict[str, Any]:
    """The settings baked into the decoded files (the rest apply when clips are read)."""
    return {
        "format_version": FORMAT_VERSION,
        "fps": data.fps,
        "short_side": data.short_side,
        "audio_rate": data.audio_rate,
        "min_duration_s": data.required_duration_s,
        "keyframe_interval": dec.keyframe_interval,
        "crf": dec.crf,
    }


# -- one video ---------------------------------------------------------------------------------


def _check_usable(m: MediaFile, min_duration: float) -> None:
    """All reasons a file is unusable, reported together; the first decides the error type."""
    problems: list[MediaError] = []
    for require in (m.require_video, m.require_audio):
        try:
            require()
        except MediaError as err:
            problems.append(err)
    if m.duration < min_duration:
        problems.append(
            TooShort(m.path, f"too short: {m.duration:.2f} s, need at least {min_duration:.2f} s (data.min_duration_s)")
        )
    if problems:
        first = problems[0]
        raise type(first)(m.path, "; ".join(p.reason for p in problems))


def _reencode_video(m: MediaFile, dst: Path, fps: float, short_side: int, gop: int, crf: int) -> dict[str, Any]:
    vs = m.require_video()
    width, height = scaled_size(vs.codec_context.width, vs.codec_context.height, short_side, even=True)
    rate = Fraction(fps).limit_denominator(1001)
    src_rate = float(vs.average_rate or vs.guessed_rate or fps)
    last_t = 0.0

    def track(frames: Iterable[tuple[float, av.VideoFrame]]) -> Iterable[tuple[float, av.VideoFrame]]:
        nonlocal last_t
        for t, frame in frames:
            last_t = t
            yield t, frame

    n = 0
    with av.open(str(dst), mode="w", format="mp4") as out:
        st = out.add_stream("libx264", rate=rate)
        st.width, st.height, st.pix_fmt = width, height, "yuv420p"
        st.codec_context.thread_count = 1  # parallelism comes from the worker processes
        st.options = {
            "crf": str(crf),
            "preset": "veryfast",
            # Byte-identical files for the same source on every run (see media/x264.py).
            "x264-params": reproducible_params(f"keyint={gop}:min-keyint={gop}:scenecut=0"),
        }
        for n, frame in enumerate(
            resample_frames(track(m.timed_frames()), float(rate), 0.0, None, last_frame_seconds=1 / src_rate), start=1
        ):
            f = m.scale(frame, width, height, "yuv420p")
            f.pts, f.time_base = n - 1, 1 / rate
            out.mux(st.encode(f))
        out.mux(st.encode(None))
    return {"frames": n, "width": width, "height": height, "video_end": last_t + 1 / src_rate}


def _npy_header(samples: int) -> bytes:
    """The header ``np.save`` writes for an int16 array of ``samples`` samples."""
    buf = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.int16)), "fortran_order": False, "shape": (samples,)}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


def _write_pcm(chunks: Iterable[np.ndarray], path: Path) -> int:
    """Write float samples in [-1, 1] as the int16 ``.npy`` file ``np.save`` would, one chunk at a
    time (memory bounded by the largest chunk); return the number of samples.

    The length is known only at the end, so the header is written twice. numpy pads a header so
    that the length along its growth axis fits in place (``GROWTH_AXIS_MAX_DIGITS``), so the
    final one has the same size as the placeholder and the bytes equal ``np.save``'s.
    """
    n = 0
    placeholder = _npy_header(0)
    with open(path, "wb") as f:
        f.write(placeholder)
        for chunk in chunks:
            # The same arithmetic as on the whole array (element-wise, float32), so the same values.
            pcm = np.clip(np.round(chunk * 32767.0), -32768, 32767).astype(np.int16)
            f.write(pcm.tobytes())  # native byte order, as np.save and the header say
            n += len(pcm)
        final = _npy_header(n)
        if len(final) != len(placeholder):  # would need a numpy without the growth padding
            raise RuntimeError(f"npy header grew from {len(placeholder)} to {len(final)} bytes for {n} samples")
        f.seek(0)
        f.write(final)
    return n


def _check_not_truncated(path: str, what: str, declared: float | None, decoded: float) -> None:
    # A truncated file often still opens (its header promises the full duration) but its data
    # stops early; a small mismatch is normal (rounding, encoder delay), a large one is not.
    if declared and declared - decoded > max(0.5, 0.05 * declared):
        raise Truncated(path, f"truncated: {what} data ends at {decoded:.2f} s of {declared:.2f} s declared")


def decode_video(src: str, video_out: Path, audio_out: Path, data: DataConfig, dec: DecodeConfig) -> dict[str, Any]:
    """Validate one video and write its normalised video and audio; raise :class:`MediaError` if unusable."""
    tmp_video = video_out.with_name(video_out.stem + TMP_VIDEO)
    tmp_audio = audio_out.with_name(audio_out.stem + TMP_AUDIO)
    try:
        with MediaFile(src) as m:
            _check_usable(m, data.required_duration_s)
            info = m.info
            video = _reencode_video(m, tmp_video, data.fps, data.short_side, dec.keyframe_interval, dec.crf)
            _check_not_truncated(src, "video", m.declared_duration, video["video_end"])
            # Streamed to the file chunk by chunk: holding the whole track (several float copies)
            # cost about 137 MB per minute of 48 kHz stereo (bench/decode_memory_bench.py).
            audio_samples = _write_pcm(m.iter_audio(data.audio_rate), tmp_audio)
            audio_end = audio_samples / data.audio_rate
            _check_not_truncated(src, "audio", info.audio.duration if info.audio else None, audio_end)
        duration = video["frames"] / data.fps
        if duration < data.required_duration_s:
            raise TooShort(src, f"too short: {duration:.2f} s decoded, need {data.required_duration_s:.2f} s")
        # Rename last: a crash leaves only *.tmp files, never a half-written file a reader trusts.
        os.replace(tmp_video, video_out)
        os.replace(tmp_audio, audio_out)
    finally:
        tmp_video.unlink(missing_ok=True)
        tmp_audio.unlink(missing_ok=True)
    return {
        "duration": round(duration, 4),
        "frames": video["frames"],
        "width": video["width"],
        "height": video["height"],
        "audio_samples": audio_samples,
        "source": {
            "container": info.container,
            "video_codec": info.video.codec if info.video else None,
            "width": info.video.width if info.video else None,
            "height": info.video.height if info.video else None,
            "fps": info.video.fps if info.video else None,
            "audio_codec": info.audio.codec if info.audio else None,
            "sample_rate": info.audio.sample_rate if info.audio else None,
            "channels": info.audio.channels if info.audio else None,
        },
    }


# -- the step ----------------------------------------------------------------------------------


def _fingerprint(path: str) -> list[int | str] | None:
    """(size, version) of a source, None when it is missing; raises for a URI the store refuses."""
    if store.is_remote(path):
        found = store.stat(path)
        return None if found is None else [found[0], found[1]]
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


@contextlib.contextmanager
def _local_copy(source: str) -> Iterator[str]:
    """A local path for ``source``: itself, or (an object store URI) a temporary download that is
    removed afterwards, so decoding holds one raw video at a time on local disk."""
    if not store.is_remote(source):
        yield source
        return
    with tempfile.TemporaryDirectory(prefix="xdc-fetch-") as tmp:
        local = Path(tmp) / posixpath.basename(source)
        try:
            store.download_file(source, local)
        except FileNotFoundError:
            raise FileMissing(source, "no such object in the store") from None
        yield str(local)


def _decode_task(resolved: str, out_dir: str, data: DataConfig, dec: DecodeConfig) -> dict[str, Any]:
    """Worker entry point: never raises for a bad video, returns a journal record instead."""
    vid = video_id(resolved)
    record: dict[str, Any] = {"resolved": resolved, "id": vid, "fingerprint": None}
    try:  # everything in it: a row the store refuses (a bad key) costs that row only
        record["fingerprint"] = _fingerprint(resolved)
        out = Path(out_dir)
        with _local_copy(resolved) as local:
            record |= decode_video(local, out / "video" / f"{vid}.mp4", out / "audio" / f"{vid}.npy", data, dec)
        record["status"] = "accepted"
    except MediaError as err:
        record |= {"status": "quarantined", "code": err.code, "reason": err.reason}
    except store.StoreUnavailable:
        raise  # the store is down, not this video: stop the run (a rerun resumes), quarantine nothing
    except XdcError as err:  # the store refused or could not serve the file: the message says why
        record |= {"status": "quarantined", "code": Unreadable.code, "reason": str(err)}
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise  # the output's disk, not this video: stop the run (a rerun resumes), quarantine nothing
        err = UnexpectedError(resolved, f"unexpected error: {type(err).__name__}: {err}")
        record |= {"status": "quarantined", "code": err.code, "reason": err.reason}
    except Exception as err:  # a bug or an FFmpeg surprise must not cost the other videos
        err = UnexpectedError(resolved, f"unexpected error: {type(err).__name__}: {err}")
        record |= {"status": "quarantined", "code": err.code, "reason": err.reason}
    return record


def _reusable(record: dict[str, Any] | None, out: Path) -> bool:
    if record is None or record.get("fingerprint") is None:
        return False  # never seen, or the file was missing: try again
    if record["fingerprint"] != _fingerprint(record["resolved"]):
        return False  # the source changed since
    if record["status"] == "accepted":
        vid = record["id"]
        return (out / "video" / f"{vid}.mp4").is_file() and (out / "audio" / f"{vid}.npy").is_file()
    return True


def _run_pool(
    todo: list[str], workers: int, task: Callable[[str], dict[str, Any]], on_done: Callable[[dict[str, Any]], None]
) -> None:
    """Run ``task`` over ``todo`` in worker processes; isolate any file that kills its worker."""
    crashed: list[str] = []
    if todo:
        with worker_pool(min(workers, len(todo))) as pool:
            futures = {pool.submit(task, path): path for path in todo}
            for fut in as_completed(futures):
                try:
                    on_done(fut.result())
                except BrokenProcessPool:
                    crashed.append(futures[fut])
    # A dead worker breaks the whole pool, so every unfinished file lands here; retry each alone
    # to find the one that really crashes.
    for path in crashed:
        try:
            with worker_pool(1) as pool:
                on_done(pool.submit(task, path).result())
        except BrokenProcessPool:
            err = WorkerCrashed(path, "the decoder process crashed on this file (corrupt data?)")
            try:
                fingerprint = _fingerprint(path)
            except (XdcError, ValueError):
                fingerprint = None  # retried by a rerun
            on_done(
                {"resolved": path, "id": video_id(path), "fingerprint": fingerprint}
                | {"status": "quarantined", "code": err.code, "reason": err.reason}
            )


@dataclass(frozen=True)
class _Task:
    """Picklable partial of :func:`_decode_task` for the worker processes."""

    out_dir: str
    data: DataConfig
    dec: DecodeConfig

    def __call__(self, resolved: str) -> dict[str, Any]:
        return _decode_task(resolved, self.out_dir, self.data, self.dec)


def _write_csv(path: Path, header: Iterable[str], rows: Iterable[Iterable[Any]]) -> None:
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(header)
    w.writerows(rows)
    with atomic_write(path) as f:
        f.write(text.getvalue().encode())


def _prepare_out_dir(out: Path, settings: dict[str, Any]) -> None:
    meta_path = out / "meta.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        if diff:
            changes = ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in diff.items())
            raise DatasetMismatch(
                f"{out} was decoded with other settings ({changes}); resuming would mix them. "
                "Use another --out folder, or delete this one to start over."
            )
    elif out.exists() and any(out.iterdir()):
        raise DatasetMismatch(f"{out} is not empty and is not a decoded dataset; choose an empty or new folder")
    (out / "video").mkdir(parents=True, exist_ok=True)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    write_json(meta_path, settings)


def remove_leftovers(out: Path) -> None:
    """Remove what a killed decode of ``out`` left: its videos' temp files (ours by name; one decode
    works in a folder at a time) and the temp files of its killed atomic writes."""
    for sub, suffix in (("video", TMP_VIDEO), ("audio", TMP_AUDIO)):
        for tmp in (out / sub).glob(f"*{suffix}"):
            tmp.unlink(missing_ok=True)
    store.remove_stale_partials(out)


def decode_dataset(manifest: str | Path, out_dir: str | Path, config: Config, progress: bool = True) -> dict[str, Any]:
    """Decode every video of ``manifest`` into ``out_dir`` (resuming) and return the summary.

    Raises :class:`~xdc_core.manifest.ManifestError` for an unusable manifest and
    :class:`DatasetMismatch` when ``out_dir`` holds a dataset decoded with other settings.
    """
    return decode_rows(read_manifest(manifest), Path(out_dir), config, progress)


def read_journal(path: Path) -> dict[str, dict[str, Any]]:
    """A decoded folder's journal (``progress.jsonl``): the last record of each source."""
    records: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # the last line of a killed run may be cut short
            records[rec["resolved"]] = rec
    return records


def decode_rows(rows: list[ManifestRow], out: Path, config: Config, progress: bool = True) -> dict[str, Any]:
    """:func:`decode_dataset` on manifest rows already read (e.g. one shard's,
    :mod:`xdc_core.decode_shards`): the folder lists exactly these rows, in this order."""
    started = time.perf_counter()
    settings = decode_settings(config.data, config.decode)
    _prepare_out_dir(out, settings)
    remove_leftovers(out)

    journal_path = out / "progress.jsonl"
    records = read_journal(journal_path)
    todo = [r.resolved for r in rows if not _reusable(records.get(r.resolved), out)]
    resumed = len(rows) - len(todo)

    with open(journal_path, "a") as journal, tqdm(
        total=len(todo), unit="video", desc="decode", disable=not progress or None
    ) as bar:

        def on_done(rec: dict[str, Any]) -> None:
            records[rec["resolved"]] = rec
            journal.write(json.dumps(rec) + "\n")
            journal.flush()
            bar.update(1)
            record_decoded(rec, bar.n, time.perf_counter() - started)

        _run_pool(todo, config.decode.workers, _Task(str(out), config.data, config.decode), on_done)

    summary = _write_outputs(out, rows, records)
    elapsed = time.perf_counter() - started
    summary |= {
        "resumed": resumed,
        "decoded_now": len(todo),
        "elapsed_s": round(elapsed, 3),
        "videos_per_s": round(len(todo) / elapsed, 3) if todo else None,
        "workers": config.decode.workers,
        "settings": settings,
    }
    write_json(out / "summary.json", summary)
    return summary


def check_accepted(summary: dict[str, Any], out: str | Path) -> None:
    """An :class:`InputError` when decoding accepted none of the videos (``out``: the dataset, as the
    user named it): an empty dataset is no success, whatever the step after it would say."""
    if summary["accepted"] == 0 and summary["total"] > 0:
        reasons = ", ".join(f"{code} {n}" for code, n in summary["reasons"].items())
        raise InputError(
            f"all {summary['total']} videos were quarantined ({reasons}; each file's reason in "
            f"{str(out).rstrip('/')}/quarantine.csv): nothing to train on. Fix the files or the manifest's paths "
            "and rerun")


def _write_outputs(out: Path, rows: list[ManifestRow], records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    accepted: list[list[Any]] = []
    quarantined: list[list[str]] = []
    reasons: Counter[str] = Counter()
    total_duration = 0.0
    for row in rows:
        rec = records[row.resolved]
        if rec["status"] == "accepted":
            accepted.append(
                [len(accepted), rec["id"], row.resolved, row.label or "", row.split or ""]
                + [rec[k] for k in ("duration", "frames", "width", "height", "audio_samples")]
            )
            total_duration += rec["duration"]
        else:
            quarantined.append([row.path, rec["reason"]])
            reasons[rec["code"]] += 1
    _write_csv(out / "index.csv", INDEX_COLUMNS, accepted)
    _write_csv(out / "quarantine.csv", ("path", "reason"), quarantined)
    return {
        "total": len(rows),
        "accepted": len(accepted),
        "quarantined": len(quarantined),
        "accepted_duration_s": round(total_duration, 3),
        "reasons": dict(sorted(reasons.items())),
        "labels": sorted({row.label for row in rows if row.label and records[row.resolved]["status"] == "accepted"}),
    }
