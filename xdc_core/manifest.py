"""The input manifest: a CSV with header ``path,label,split`` (label and split optional).

Paths are relative to the manifest's folder, or absolute. Problems with the manifest itself
(missing, wrong header, a malformed row) are unusable input: :class:`ManifestError` names the
file and line. Problems with a listed video are not the manifest's: decode quarantines them.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

COLUMNS = ("path", "label", "split")


class ManifestError(ValueError):
    """The manifest cannot be used; the message names the file, the line and what to fix."""


@dataclass(frozen=True)
class ManifestRow:
    line: int
    path: str  # as written in the manifest
    resolved: str  # absolute path
    label: str | None
    split: str | None


def read_manifest(manifest: str | Path) -> list[ManifestRow]:
    """Parse and validate ``manifest``; every row is returned, in file order."""
    manifest = Path(manifest)
    if not manifest.is_file():
        raise ManifestError(f"manifest not found: {manifest}")
    base = manifest.resolve().parent
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ManifestError(f"{manifest}: not UTF-8 text ({err}); a manifest is a CSV file") from None
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
        resolved = str(Path(path) if Path(path).is_absolute() else (base / path).resolve())
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
