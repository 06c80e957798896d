"""Benchmark datasets (UCF101, HMDB51) → our manifest (``path,label,split``, :mod:`xdc_core.manifest`).

The official split files say which video is in which split; an extracted copy of the dataset
rarely matches them exactly. The work is done in three pure steps and two edges:

    parse_ucf101_split / parse_hmdb51_split   split-file texts → :class:`SplitListing`
    match_files                               a listing + the files under the root → :class:`Matched`
    manifest_rows                             matched videos → manifest rows (paths for the manifest)
    make_manifest                             the edge: reads the lists, lists the root, writes the CSV
    format_report                             what ``xdc dataset`` prints

Quirks handled, and reported rather than hidden: CRLF line endings; names whose case differs
from the lists (the UCF101 lists spell ``HandStandPushups``, extracted copies have the folder
``HandstandPushups``), matched case-insensitively; listed videos missing on disk (an error,
unless ``allow_missing``: then they are left out); ``.avi`` files no list names (not used).
The root and the manifest may both be local or both in an object store (``s3://``), because a
manifest's paths resolve in its own store.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from . import store
from .errors import InputError
from .manifest import COLUMNS

SPLITS = ("train", "test")
SPLIT_NUMBERS = (1, 2, 3)  # both datasets have three official splits
EXAMPLES = 3  # how many paths a message or report names
VIDEO_SUFFIX = ".avi"  # both datasets ship AVI files; other files under the root are ignored
HMDB51_TAGS = {"0": None, "1": "train", "2": "test"}  # 0 = in neither split
DATASETS = ("ucf101", "hmdb51")
HMDB51_LIST_RE = re.compile(r"(?P<label>.+)_test_split(?P<split>\d+)\.txt")


@dataclass(frozen=True)
class ListedVideo:
    """One video of a split list."""

    path: str  # relative to the dataset root, '/'-separated (as listed, or as found on disk)
    label: str  # the class name
    split: str  # "train" or "test"
    where: str  # "trainlist01.txt line 12": where it is listed, for messages


@dataclass(frozen=True)
class SplitListing:
    """What the split files say for one split."""

    dataset: str  # "ucf101" or "hmdb51"
    split: int  # 1, 2 or 3
    videos: tuple[ListedVideo, ...]  # in list order, train lists first
    classes: tuple[str, ...]  # every class the lists define
    expected_classes: int  # how many the full dataset has (101, 51)
    unused: tuple[str, ...] = ()  # listed in neither split (HMDB51 tag 0): not "unlisted" on disk


@dataclass(frozen=True)
class Matched:
    """A listing matched against the files under the root."""

    listing: SplitListing
    videos: tuple[ListedVideo, ...]  # the videos found, ``path`` as on disk
    case_matched: tuple[tuple[str, str], ...]  # (listed path, path on disk) matched ignoring case
    missing: tuple[ListedVideo, ...]  # listed, no file
    unlisted: tuple[str, ...]  # .avi files on disk that no list names


# --- parsing the lists (pure) -----------------------------------------------------------------


def _lines(text: str) -> Iterable[tuple[int, list[str]]]:
    """``(line number, fields)`` of the non-blank lines; CRLF and trailing blanks are harmless."""
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if fields:
            yield number, fields


def parse_ucf101_classes(text: str, source: str = "classInd.txt") -> dict[int, str]:
    """``classInd.txt`` (lines ``<1-based id> <ClassName>``) → ``{id: name}``."""
    classes: dict[int, str] = {}
    for number, fields in _lines(text):
        if len(fields) != 2 or not fields[0].isdigit():
            raise InputError(f"{source} line {number}: expected '<class id> <ClassName>', got {' '.join(fields)!r}")
        cid, name = int(fields[0]), fields[1]
        if cid in classes or name.lower() in {n.lower() for n in classes.values()}:
            raise InputError(f"{source} line {number}: class id {cid} or name {name} is defined twice")
        classes[cid] = name
    if not classes:
        raise InputError(f"{source}: no classes; expected lines '<class id> <ClassName>' (the official classInd.txt)")
    return classes


def parse_ucf101_split(class_ind: str, train_list: str, test_list: str, split: int) -> SplitListing:
    """The texts of ``classInd.txt``, ``trainlist0N.txt`` and ``testlist0N.txt`` → the listing.

    Train lines are ``<ClassDir>/<file>.avi <class id>``; test lines carry only the path (an id,
    if present, is checked the same way). The label is the class name of ``classInd.txt``; a class
    id that disagrees with the path's folder is an error naming the line.
    """
    _check_split(split)
    classes = parse_ucf101_classes(class_ind)
    by_folder = {name.lower(): name for name in classes.values()}
    videos: list[ListedVideo] = []
    for subset, text in (("train", train_list), ("test", test_list)):
        source = f"{subset}list{split:02d}.txt"
        for number, fields in _lines(text):
            where = f"{source} line {number}"
            path, folder = fields[0], fields[0].split("/", 1)[0]
            if len(fields) > 2 or "/" not in path or (subset == "train" and len(fields) != 2):
                expected = "<ClassDir>/<file>.avi" + (" <class id>" if subset == "train" else "")
                raise InputError(f"{where}: expected '{expected}', got {' '.join(fields)!r}")
            label = by_folder.get(folder.lower())  # the folder names the class, whatever its case
            if label is None:
                raise InputError(f"{where}: folder {folder!r} is not a class of classInd.txt; "
                                 "use the classInd.txt of the same release as the lists")
            if len(fields) == 2:
                cid = int(fields[1]) if fields[1].isdigit() else None
                if cid not in classes:
                    raise InputError(f"{where}: class id {fields[1]!r} is not in classInd.txt (ids 1-{max(classes)})")
                if classes[cid] != label:
                    raise InputError(f"{where}: class id {cid} is {classes[cid]} in classInd.txt, but the video is "
                                     f"in folder {folder}; fix the line or use the lists of the same release")
            videos.append(ListedVideo(path, label, subset, where))
    _check_unique(videos)
    return SplitListing("ucf101", split, tuple(videos), tuple(classes.values()), expected_classes=101)


def parse_hmdb51_split(lists: Mapping[str, str], split: int) -> SplitListing:
    """The split files ``{file name: text}`` → the listing of ``split``.

    Files are ``<class>_test_split<N>.txt``, one per class and split (those of other splits are
    ignored); lines are ``<video>.avi <tag>`` with 1 = train, 2 = test, 0 = in neither. The video
    is ``<class>/<video>.avi`` under the root.
    """
    _check_split(split)
    videos: list[ListedVideo] = []
    unused: list[str] = []
    classes: list[str] = []
    for name in sorted(lists):
        found = HMDB51_LIST_RE.fullmatch(name)
        if not found or int(found["split"]) != split:
            continue
        label = found["label"]
        classes.append(label)
        for number, fields in _lines(lists[name]):
            where = f"{name} line {number}"
            if len(fields) < 2 or fields[-1] not in HMDB51_TAGS:
                raise InputError(f"{where}: expected '<video>.avi <0|1|2>', got {' '.join(fields)!r}")
            # the tag is the last field; the rest is the name (trailing blanks are common)
            path, subset = f"{label}/{' '.join(fields[:-1])}", HMDB51_TAGS[fields[-1]]
            if subset is None:
                unused.append(path)
            else:
                videos.append(ListedVideo(path, label, subset, where))
    if not classes:
        raise InputError(f"no <class>_test_split{split}.txt among the {len(lists)} split files: the splits folder "
                         "must hold the official HMDB51 split files (testTrainMulti_7030_splits)")
    _check_unique(videos)
    return SplitListing("hmdb51", split, tuple(videos), tuple(classes), expected_classes=51, unused=tuple(unused))


def _check_split(split: int) -> None:
    if split not in SPLIT_NUMBERS:
        raise InputError(f"split {split} does not exist: the official splits are 1, 2 and 3")


def _check_unique(videos: Iterable[ListedVideo]) -> None:
    """A video listed twice (twice in one split, or in train and test) is an error naming both lines."""
    first: dict[str, ListedVideo] = {}
    for v in videos:
        seen = first.setdefault(v.path.lower(), v)
        if seen is not v:
            raise InputError(f"{v.where}: {v.path} is already listed ({seen.where}, {seen.split}); "
                             "a video is in one split once: fix the lists")


# --- matching against the files on disk (pure) ------------------------------------------------


def match_files(listing: SplitListing, files: Iterable[str]) -> Matched:
    """Match ``listing`` against ``files`` (every file under the root, '/'-separated, relative).

    A listed path is found as it is spelt, or else as the one file whose path differs only in
    case; the video then takes the path on disk. Two files that differ only in case make the
    match ambiguous (an error); so does one file claimed by two lines.
    """
    on_disk = set(files)
    by_lower: dict[str, list[str]] = {}
    for f in sorted(on_disk):
        by_lower.setdefault(f.lower(), []).append(f)
    found: list[ListedVideo] = []
    case_matched: list[tuple[str, str]] = []
    missing: list[ListedVideo] = []
    claimed: dict[str, ListedVideo] = {}
    for v in listing.videos:
        path = v.path
        if path not in on_disk:
            candidates = by_lower.get(path.lower(), [])
            if len(candidates) > 1:
                raise InputError(f"{v.where}: {path} matches {len(candidates)} files that differ only in case "
                                 f"({', '.join(candidates[:EXAMPLES])}); keep one of them")
            if not candidates:
                missing.append(v)
                continue
            path = candidates[0]
            case_matched.append((v.path, path))
        if path in claimed:
            raise InputError(f"{v.where}: {path} is the file of {claimed[path].where} too; fix the lists")
        claimed[path] = v
        found.append(replace(v, path=path))
    named = {p.lower() for p in listing.unused} | {v.path.lower() for v in listing.videos}
    unlisted = tuple(f for f in sorted(on_disk)
                     if f.lower().endswith(VIDEO_SUFFIX) and f not in claimed and f.lower() not in named)
    return Matched(listing, tuple(found), tuple(case_matched), tuple(missing), unlisted)


def check_complete(matched: Matched, root: str, allow_missing: bool = False) -> None:
    """Raise :class:`InputError` when listed videos are missing (unless ``allow_missing``), and
    always when none was found: that is a wrong root, not a few lost files."""
    missing, listing = matched.missing, matched.listing
    if not missing:
        return
    names = "; ".join(f"{v.path} ({v.where})" for v in missing[:EXAMPLES])
    if not matched.videos:
        raise InputError(
            f"{listing.dataset} split {listing.split}: none of the {len(missing)} listed videos is under {root} "
            f"(first: {names}); the root must be the folder that holds the class folders"
            + (" (e.g. ApplyEyeMakeup/)" if listing.dataset == "ucf101" else " (e.g. brush_hair/)")
        )
    if not allow_missing:
        raise InputError(
            f"{listing.dataset} split {listing.split}: {len(missing)} of {len(listing.videos)} listed videos are not "
            f"under {root}: {names}{' ...' if len(missing) > EXAMPLES else ''}; extract the complete dataset there, "
            "or leave them out of the manifest with --allow-missing (allow_missing)"
        )


def manifest_rows(matched: Matched, root: str, manifest: str) -> list[tuple[str, str, str]]:
    """``(path, label, split)`` rows of the found videos, with paths as :mod:`xdc_core.manifest`
    resolves them: relative to the manifest's folder when the videos are inside it (the folder
    can then move as a whole), else absolute (a path, or a URI in the same store)."""
    if store.is_remote(root) != store.is_remote(manifest):
        raise InputError(
            f"the root {root} and the manifest {manifest} must both be local or both in the object store: "
            "a manifest's paths resolve in its own store"
        )
    if store.is_remote(root):
        base, folder = str(root).rstrip("/"), str(manifest).rsplit("/", 1)[0] + "/"
        paths = [f"{base}/{v.path}".removeprefix(folder) for v in matched.videos]
    else:
        base_dir, folder_dir = Path(root).resolve(), Path(manifest).resolve().parent
        paths = [(base_dir / v.path).relative_to(folder_dir).as_posix() if base_dir.is_relative_to(folder_dir)
                 else str(base_dir / v.path) for v in matched.videos]
    return [(path, v.label, v.split) for path, v in zip(paths, matched.videos, strict=True)]


def manifest_text(rows: Iterable[tuple[str, str, str]]) -> str:
    """The CSV text of ``rows`` with the manifest's header."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    return buf.getvalue()


# --- the edges: reading the lists, listing the root, writing the manifest ---------------------


def _read_list(splits: str, name: str) -> str:
    uri = str(store.parse_uri(splits).child(name))
    try:
        data = store.read_bytes(uri)
    except (FileNotFoundError, IsADirectoryError):
        raise InputError(f"{uri}: no such split file; --splits must be the folder of the official split files "
                         "(UCF101: ucfTrainTestlist/, with classInd.txt)") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(f"{uri}: not a text file ({err}); expected an official split list") from None


def read_listing(dataset: str, splits: str, split: int) -> SplitListing:
    """Read the split files of ``dataset`` ("ucf101" or "hmdb51") in the folder ``splits``."""
    _check_split(split)
    if dataset == "ucf101":
        return parse_ucf101_split(_read_list(splits, "classInd.txt"), _read_list(splits, f"trainlist{split:02d}.txt"),
                                  _read_list(splits, f"testlist{split:02d}.txt"), split)
    if dataset == "hmdb51":
        names = [n for n in store.list_keys(splits) if "/" not in n and HMDB51_LIST_RE.fullmatch(n)]
        if not names and not store.is_remote(splits) and not Path(splits).is_dir():
            raise InputError(f"--splits {splits}: no such folder; give the folder of the HMDB51 split files")
        return parse_hmdb51_split({n: _read_list(splits, n) for n in names}, split)
    raise InputError(f"unknown dataset {dataset!r}: use one of {', '.join(DATASETS)}")


def make_manifest(
    dataset: str, root: store.Uri, splits: store.Uri, split: int, out: store.Uri, allow_missing: bool = False
) -> Matched:
    """Write the manifest of ``dataset`` split ``split`` to ``out`` (atomically) and return the match.

    ``root`` holds the extracted class folders and ``splits`` the official split files; both, and
    ``out``, may be paths or (root and out together) object-store URIs.
    """
    root, splits, out = (str(store.parse_uri(u)) for u in (root, splits, out))  # file:///x → /x
    listing = read_listing(dataset, splits, split)
    if not store.is_remote(root) and not Path(root).is_dir():
        raise InputError(f"--root {root}: no such folder; give the folder that holds the extracted class folders")
    if not store.is_remote(out) and Path(out).is_dir():
        raise InputError(f"--out {out} is a folder; give the manifest's file name, e.g. {Path(out) / 'manifest.csv'}")
    matched = match_files(listing, store.list_keys(root))
    check_complete(matched, root, allow_missing)
    text = manifest_text(manifest_rows(matched, root, out)).encode()
    if store.is_remote(out):
        store.write_bytes(out, text)  # a PUT is atomic
    else:
        with store.atomic_write(out) as f:
            f.write(text)
    return matched


# --- the report -------------------------------------------------------------------------------


def format_report(matched: Matched, out: str) -> str:
    """What ``xdc dataset`` prints: per split the videos and classes, then each quirk found."""
    listing = matched.listing
    lines = [f"{listing.dataset} split {listing.split}: {len(matched.videos)} videos → {out}"]
    missing = Counter(v.split for v in matched.missing)
    folded = {disk for _, disk in matched.case_matched}
    for subset in SPLITS:
        videos = [v for v in matched.videos if v.split == subset]
        quirks = [f"{missing[subset]} missing, left out"] if missing[subset] else []
        if n_case := sum(v.path in folded for v in videos):
            quirks.append(f"{n_case} matched ignoring case")
        lines.append(f"  {subset + ':':7}{len(videos):5} videos, {len({v.label for v in videos})} classes"
                     + (f" ({'; '.join(quirks)})" if quirks else ""))
    if len(listing.classes) != listing.expected_classes:
        lines.append(f"  classes: the lists define {len(listing.classes)}; the full dataset has "
                     f"{listing.expected_classes}")
    if matched.case_matched:
        listed, disk = matched.case_matched[0]
        lines.append(f"  case: {len(matched.case_matched)} listed paths matched a file only ignoring case, "
                     f"e.g. {listed} → {disk}")
    if matched.missing:
        names = ", ".join(v.path for v in matched.missing[:EXAMPLES])
        lines.append(f"  missing: {len(matched.missing)} listed videos are not on disk and were left out "
                     f"(--allow-missing): {names}{' ...' if len(matched.missing) > EXAMPLES else ''}")
    if matched.unlisted:
        names = ", ".join(matched.unlisted[:EXAMPLES])
        lines.append(f"  unlisted: {len(matched.unlisted)} {VIDEO_SUFFIX} files on disk are in no list, not used: "
                     f"{names}{' ...' if len(matched.unlisted) > EXAMPLES else ''}")
    if listing.unused:
        lines.append(f"  unused: {len(listing.unused)} listed videos are in neither split (tag 0)")
    return "\n".join(lines)
