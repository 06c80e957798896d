"""The input manifest: a CSV with header ``path,label,split`` (label and split optional).

Paths are relative to the manifest's folder, or absolute; a manifest in an object store
(``s3://bucket/data/manifest.csv``) lists videos in the same store. Problems with the manifest itself
(missing, wrong header, a malformed row) are unusable input: :class:`ManifestError` names the
file and line. Problems with a listed video are not the manifest's: decode quarantines them.
"""

from __future__ import annotations

import csv
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import XdcError
from . import store

COLUMNS = ("path", "label", "split")


class ManifestError(XdcError, ValueError):
    """The manifest cannot be used; the message names the file, the line and what to fix."""


@dataclass(frozen=True)
class ManifestRow:
    line: int
    path: str  # as written in the manifest
    resolved: str  # absolute path
    label: str | None
    split: str | None


def _read_text(manifest: str) -> str:
    if store.is_remote(manifest):
        try:
            data = store.read_bytes(manifest)
        except FileNotFoundError:
            raise ManifestError(f"manifest not found: {manifest}") from None
    else:
        path = Path(manifest)
        if not path.is_file():
            raise ManifestError(f"manifest not found: {manifest}")
        data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ManifestError(f"{manifest}: not UTF-8 text ({err}); a manifest is a CSV file") from None


def _resolver(manifest: str) -> Callable[[str], str]:
    """How a manifest's paths resolve: relative to the manifest's folder, in the same store."""
    if store.is_remote(manifest):
        base = manifest.rsplit("/", 1)[0]
        return lambda p: p if store.is_remote(p) else f"{base}/{posixpath.normpath(p)}"
    folder = Path(manifest).resolve().parent
    return lambda p: str(Path(p) if Path(p).is_absolute() else (folder / p).resolve())


def read_manifest(manifest: str | Path) -> list[ManifestRow]:
    """Parse and validate ``manifest`` (a path, or an ``s3://``/``minio://`` URI whose videos are
    in the same bucket); every row is returned, in file order."""
    manifest = str(manifest)
    text = _read_text(manifest)
    resolve = _resolver(manifest)
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None:
        raise ManifestError(f"{manifest}: empty file; expected a header line 'path,label,split'")
    header = [h.strip() for h in header]
    unknown = [h for h in header if h not in COLUMNS]
    if "path" not in header or unknown or len(set(header)) != len(header):
        raise ManifestError(
            f"{manifest} line 1: header must name 'path' and optionally 'label' and 'split', each once "
            f"(got: {','.join(header)})"
        )
    rows: list[ManifestRow] = []
    seen: dict[str, int] = {}
    for line_no, fields in enumerate(reader, start=2):
        if not fields or all(not f.strip() for f in fields):
            continue  # blank lines are harmless
        if len(fields) != len(header):
            raise ManifestError(
                f"{manifest} line {line_no}: expected {len(header)} fields ({','.join(header)}), got {len(fields)}"
            )
        values = dict(zip(header, (f.strip() for f in fields), strict=True))
        path = values["path"]
        if not path:
            raise ManifestError(f"{manifest} line {line_no}: empty path")
        resolved = resolve(path)
        if resolved in seen:
            raise ManifestError(f"{manifest} line {line_no}: {path} is listed twice (first on line {seen[resolved]})")
        seen[resolved] = line_no
        rows.append(
            ManifestRow(
                line=line_no,
                path=path,
                resolved=resolved,
                label=values.get("label") or None,
                split=values.get("split") or None,
            )
        )
    if not rows:
        raise ManifestError(f"{manifest}: no rows after the header; list at least one video")
    return rows


def write_manifest(path: str | Path, rows: list[tuple[str, str | None, str | None]]) -> None:
    """Write ``(path, label, split)`` rows with the standard header."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for p, label, split in rows:
            w.writerow([p, label or "", split or ""])
