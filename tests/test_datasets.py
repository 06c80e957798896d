"""Benchmark split files → manifests (xdc_core/datasets.py, `xdc dataset`).

The official UCF101 lists in ../shared/data are parsed as they are (the counts are facts of those
files); matching against disk uses listings and miniature trees of tiny generated videos.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from xdc_core import store
from xdc_core.datasets import (
    ListedVideo,
    SplitListing,
    format_report,
    make_manifest,
    manifest_rows,
    match_files,
    parse_hmdb51_split,
    parse_ucf101_split,
    read_listing,
)
from xdc_core.errors import InputError
from xdc_core.manifest import read_manifest

UCF_LISTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ucf101" / "ucfTrainTestlist"
# (train, test) videos per official split, counted in the files (wc -l); test groups g01-g07,
# g08-g14, g15-g21. Every split covers all 13,320 videos.
UCF_COUNTS = {1: (9537, 3783), 2: (9586, 3734), 3: (9624, 3696)}


def xdc(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("xdc") or str(Path(sys.executable).parent / "xdc")
    return subprocess.run([exe, *args], check=False, capture_output=True, text=True)


@pytest.fixture(scope="module")
def ucf_lists() -> Path:
    if not (UCF_LISTS / "classInd.txt").is_file():
        pytest.skip(f"the official UCF101 split files are not here ({UCF_LISTS}); see ../shared/data/README.md")
    return UCF_LISTS


# --- the official UCF101 lists (pure) ---------------------------------------------------------


@pytest.mark.parametrize("split", [1, 2, 3])
def test_official_ucf101_lists_give_the_published_counts(ucf_lists, split):
    listing = read_listing("ucf101", str(ucf_lists), split)
    by_split = Counter(v.split for v in listing.videos)
    assert (by_split["train"], by_split["test"]) == UCF_COUNTS[split]
    assert len(listing.classes) == 101
    for subset in ("train", "test"):
        assert len({v.label for v in listing.videos if v.split == subset}) == 101
    train = {v.path for v in listing.videos if v.split == "train"}
    test = {v.path for v in listing.videos if v.split == "test"}
    assert not train & test and len(train | test) == 13320
    groups = {int(p.rsplit("_g", 1)[1][:2]) for p in test}
    assert groups == set(range(7 * split - 6, 7 * split + 1))  # the official protocol: 7 groups per split
    # labels are classInd names; the test list's labels come from the folder
    assert {v.label for v in listing.videos if v.path.startswith("HandStandPushups/")} == {"HandStandPushups"}


def test_official_lists_match_an_extracted_copy_with_its_case_quirk(ucf_lists):
    """All 13,320 paths, with the folder spelt as extracted copies spell it: matched, and reported."""
    listing = read_listing("ucf101", str(ucf_lists), 1)
    on_disk = [v.path.replace("HandStandPushups/", "HandstandPushups/") for v in listing.videos]
    matched = match_files(listing, [*on_disk, "HandstandPushups/readme.txt"])
    quirky = [v for v in listing.videos if v.path.startswith("HandStandPushups/")]
    assert len(matched.videos) == 13320 and not matched.missing and not matched.unlisted
    assert len(matched.case_matched) == len(quirky) > 0
    assert all(d.startswith("HandstandPushups/") for _, d in matched.case_matched)
    report = format_report(matched, "m.csv")
    assert f"case: {len(quirky)} listed paths matched a file only ignoring case, e.g. HandStandPushups/" in report
    assert "train:  9537 videos, 101 classes" in report and "test:   3783 videos, 101 classes" in report


# --- parsing errors and quirks (pure) ---------------------------------------------------------

CLASS_IND = "1 ApplyEyeMakeup\r\n2 Archery\r\n3 HandStandPushups\r\n"


def test_crlf_blank_lines_and_a_test_label_from_the_folder():
    listing = parse_ucf101_split(
        CLASS_IND, "Archery/v_Archery_g08_c01.avi 2\r\n\r\n", "handstandpushups/v_HandStandPushups_g01_c01.avi\r\n", 1)
    assert [(v.path, v.label, v.split) for v in listing.videos] == [
        ("Archery/v_Archery_g08_c01.avi", "Archery", "train"),
        ("handstandpushups/v_HandStandPushups_g01_c01.avi", "HandStandPushups", "test"),
    ]


@pytest.mark.parametrize(("train", "test", "message"), [
    ("Archery/v_Archery_g08_c01.avi 1\r\n", "",
     "trainlist01.txt line 1: class id 1 is ApplyEyeMakeup in classInd.txt, but the video is in folder Archery"),
    ("Archery/v_Archery_g08_c01.avi 7\n", "", "trainlist01.txt line 1: class id '7' is not in classInd.txt"),
    ("Archery/v_Archery_g08_c01.avi\n", "", "trainlist01.txt line 1: expected '<ClassDir>/<file>.avi <class id>'"),
    ("", "\nBowling/v_Bowling_g01_c01.avi\n", "testlist01.txt line 2: folder 'Bowling' is not a class of classInd.txt"),
    ("Archery/a.avi 2\n", "Archery/a.avi\n",
     "testlist01.txt line 1: Archery/a.avi is already listed (trainlist01.txt line 1, train)"),
])
def test_bad_lines_are_input_errors_naming_file_and_line(train, test, message):
    with pytest.raises(InputError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        parse_ucf101_split(CLASS_IND, train, test, 1)


def test_bad_class_index_and_split_number():
    with pytest.raises(InputError, match="classInd.txt line 2: expected '<class id> <ClassName>'"):
        parse_ucf101_split("1 A\nB 2\n", "", "", 1)
    with pytest.raises(InputError, match="split 4 does not exist"):
        parse_ucf101_split(CLASS_IND, "", "", 4)


def test_hmdb51_tags_trailing_blanks_and_other_splits():
    lists = {
        "brush_hair_test_split1.txt": "a.avi 1 \r\nb.avi 2 \r\nc.avi 0 \r\n",
        "ride_bike_test_split1.txt": "d.avi 1\ne.avi 0\n",
        "ride_bike_test_split2.txt": "d.avi 2\ne.avi 1\n",
        "README": "not a split file",
    }
    one = parse_hmdb51_split(lists, 1)
    assert [(v.path, v.label, v.split) for v in one.videos] == [
        ("brush_hair/a.avi", "brush_hair", "train"), ("brush_hair/b.avi", "brush_hair", "test"),
        ("ride_bike/d.avi", "ride_bike", "train")]
    assert one.unused == ("brush_hair/c.avi", "ride_bike/e.avi") and one.classes == ("brush_hair", "ride_bike")
    two = parse_hmdb51_split(lists, 2)
    assert [(v.path, v.split) for v in two.videos] == [("ride_bike/d.avi", "test"), ("ride_bike/e.avi", "train")]
    with pytest.raises(InputError, match="ride_bike_test_split1.txt line 2: expected '<video>.avi <0|1|2>'"):
        parse_hmdb51_split({"ride_bike_test_split1.txt": "d.avi 1\ne.avi 3\n"}, 1)
    with pytest.raises(InputError, match="no <class>_test_split3.txt among the 4 split files"):
        parse_hmdb51_split(lists, 3)


def _listing(*paths: str) -> SplitListing:
    videos = tuple(ListedVideo(p, p.split("/")[0], "train", f"l.txt line {i}") for i, p in enumerate(paths, 1))
    return SplitListing("ucf101", 1, videos, tuple({v.label: 0 for v in videos}), expected_classes=101)


def test_match_reports_missing_and_unlisted_and_refuses_ambiguity(tmp_path):
    matched = match_files(_listing("A/x.avi", "A/y.avi"), ["A/x.avi", "A/z.avi", "A/notes.txt", "B/w.AVI"])
    assert [v.path for v in matched.videos] == ["A/x.avi"]
    assert [v.path for v in matched.missing] == ["A/y.avi"] and matched.unlisted == ("A/z.avi", "B/w.AVI")
    with pytest.raises(InputError, match=r"l.txt line 1: A/x.avi matches 2 files that differ only in case"):
        match_files(_listing("A/x.avi"), ["a/X.avi", "A/X.avi"])
    with pytest.raises(InputError, match=r"l.txt line 2: A/X.avi is the file of l.txt line 1 too"):
        match_files(_listing("a/x.avi", "a/X.avi"), ["A/X.avi"])


def test_manifest_paths_are_relative_inside_the_manifest_folder_else_absolute(tmp_path):
    matched = match_files(_listing("A/x.avi"), ["A/x.avi"])
    root = tmp_path / "UCF101"
    assert manifest_rows(matched, str(root), str(tmp_path / "m.csv")) == [("UCF101/A/x.avi", "A", "train")]
    assert manifest_rows(matched, str(root), str(tmp_path / "runs" / "m.csv")) == [(f"{root}/A/x.avi", "A", "train")]
    assert manifest_rows(matched, "s3://bkt/data/UCF101", "s3://bkt/data/m.csv")[0][0] == "UCF101/A/x.avi"
    assert manifest_rows(matched, "s3://bkt/UCF101", "s3://bkt/data/m.csv")[0][0] == "s3://bkt/UCF101/A/x.avi"
    with pytest.raises(InputError, match="must both be local or both in the object store"):
        manifest_rows(matched, "s3://bkt/UCF101", str(tmp_path / "m.csv"))


# --- miniature trees --------------------------------------------------------------------------


def write_avi(path: Path, level: int, seconds: float = 1.0, fps: int = 25) -> None:
    """A tiny real AVI as the datasets ship them: MPEG-4 Part 2 video (32x24) and PCM audio."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = 16000
    with av.open(str(path), mode="w", format="avi") as out:
        vs = out.add_stream("mpeg4", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 32, 24, "yuv420p"
        aus = out.add_stream("pcm_s16le", rate=rate, layout="mono")
        for i in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(np.full((24, 32, 3), (level + 4 * i) % 256, np.uint8), format="rgb24")
            frame.pts = i
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
        t = np.arange(round(seconds * rate)) / rate
        wave = (3000 * np.sin(2 * np.pi * (200 + level) * t)).astype(np.int16)
        for start in range(0, len(wave), 1600):
            af = av.AudioFrame.from_ndarray(wave[None, start:start + 1600], format="s16", layout="mono")
            af.sample_rate, af.pts, af.time_base = rate, start, Fraction(1, rate)
            out.mux(aus.encode(af))
        out.mux(aus.encode(None))


# (class id, name in the lists, folder on disk): the third is the real case quirk
MINI_CLASSES = [(1, "ApplyEyeMakeup", "ApplyEyeMakeup"), (2, "Archery", "Archery"),
                (3, "HandStandPushups", "HandstandPushups")]


@pytest.fixture(scope="module")
def mini_ucf(tmp_path_factory) -> tuple[Path, Path]:
    """UCF101-format tree: per class g08 c01/c02 train, g01 c01 test; one listed file missing
    (Archery g08 c02), one extra file on disk no list names (Archery g09 c01); CRLF lists."""
    base = tmp_path_factory.mktemp("ucf")
    root, lists = base / "UCF101", base / "ucfTrainTestlist"
    lists.mkdir()
    train, test = [], []
    for cid, name, folder in MINI_CLASSES:
        for group, clip, subset in (("08", "01", train), ("08", "02", train), ("01", "01", test)):
            rel = f"{name}/v_{name}_g{group}_c{clip}.avi"
            subset.append(f"{rel} {cid}" if subset is train else rel)
            if rel != "Archery/v_Archery_g08_c02.avi":
                write_avi(root / folder / f"v_{name}_g{group}_c{clip}.avi", level=40 * cid + int(clip))
    write_avi(root / "Archery" / "v_Archery_g09_c01.avi", level=7)
    (root / "Archery" / "notes.txt").write_text("not a video")
    for name, lines in (("classInd.txt", [f"{cid} {name}" for cid, name, _ in MINI_CLASSES]),
                        ("trainlist01.txt", train), ("testlist01.txt", test)):
        (lists / name).write_bytes("".join(f"{line}\r\n" for line in lines).encode())
    return root, lists


@pytest.mark.integration
def test_xdc_dataset_ucf101_on_a_miniature_tree_then_decode(mini_ucf, tmp_path):
    root, lists = mini_ucf
    out = tmp_path / "manifest.csv"
    args = ("dataset", "ucf101", "--root", str(root), "--splits", str(lists), "--split", "1", "--out", str(out))
    r = xdc(*args)
    assert r.returncode == 2 and not out.exists()
    assert ("1 of 9 listed videos are not under" in r.stderr
            and "Archery/v_Archery_g08_c02.avi (trainlist01.txt line 4)" in r.stderr
            and "--allow-missing" in r.stderr), r.stderr

    r = xdc(*args, "--allow-missing")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"ucf101 split 1: 8 videos → {out}"
    assert lines[1] == "  train:     5 videos, 3 classes (1 missing, left out; 2 matched ignoring case)"
    assert lines[2] == "  test:      3 videos, 3 classes (1 matched ignoring case)"
    assert "  classes: the lists define 3; the full dataset has 101" in lines
    assert ("  case: 3 listed paths matched a file only ignoring case, e.g. HandStandPushups/v_HandStandPushups_g08_c01"
            ".avi → HandstandPushups/v_HandStandPushups_g08_c01.avi") in lines
    assert ("  missing: 1 listed videos are not on disk and were left out (--allow-missing): "
            "Archery/v_Archery_g08_c02.avi") in lines
    assert "  unlisted: 1 .avi files on disk are in no list, not used: Archery/v_Archery_g09_c01.avi" in lines

    rows = read_manifest(out)
    assert all(Path(row.resolved).is_file() and Path(row.path).is_absolute() for row in rows)
    assert Counter((row.label, row.split) for row in rows) == {
        ("ApplyEyeMakeup", "train"): 2, ("Archery", "train"): 1, ("HandStandPushups", "train"): 2,
        ("ApplyEyeMakeup", "test"): 1, ("Archery", "test"): 1, ("HandStandPushups", "test"): 1}

    # the manifest is usable as it is: every video decodes (the 1 s clips are below the default
    # 2 s minimum, hence the setting)
    r = xdc("decode", "--manifest", str(out), "--out", str(tmp_path / "decoded"), "--config", "cpu-demo", "--quiet",
            "--set", "data.min_duration_s=0.5", "--set", "data.clip_cache=0")
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "decoded" / "summary.json").read_text())
    assert (summary["accepted"], summary["quarantined"]) == (8, 0)
    assert summary["labels"] == ["ApplyEyeMakeup", "Archery", "HandStandPushups"]


def test_manifest_inside_the_dataset_folder_has_relative_paths(mini_ucf, tmp_path):
    root, lists = mini_ucf
    copy = tmp_path / "UCF101"
    shutil.copytree(root, copy)
    matched = make_manifest("ucf101", str(copy), str(lists), 1, str(copy / "manifest.csv"), allow_missing=True)
    rows = read_manifest(copy / "manifest.csv")
    assert len(rows) == len(matched.videos) == 8
    assert rows[0].path == "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"
    assert all(Path(row.resolved).is_file() for row in rows)
    assert not list(copy.glob(".*xdc-partial"))  # written atomically: no temp file left


def test_wrong_root_and_missing_split_files_say_what_to_do(mini_ucf, tmp_path):
    root, lists = mini_ucf
    with pytest.raises(InputError, match=r"none of the 9 listed videos is under .*; the root must be the folder that "
                                         r"holds the class folders \(e.g. ApplyEyeMakeup/\)"):
        make_manifest("ucf101", str(root.parent), str(lists), 1, str(tmp_path / "m.csv"))
    with pytest.raises(InputError, match=r"trainlist02.txt: no such split file; --splits must be the folder"):
        make_manifest("ucf101", str(root), str(lists), 2, str(tmp_path / "m.csv"))
    with pytest.raises(InputError, match=r"--root .*nowhere: no such folder"):
        make_manifest("ucf101", str(tmp_path / "nowhere"), str(lists), 1, str(tmp_path / "m.csv"))
    assert not (tmp_path / "m.csv").exists()


HMDB = {  # class: [(video, tag in split 1, tag in split 2)], names as HMDB51 spells them
    "brush_hair": [("April_09_brush_hair_u_nm_np1_ba_goo_0.avi", 1, 2),
                   ("Brushing_Hair_brush_hair_h_nm_np1_le_goo_0.avi", 2, 1),
                   ("Aussie_Brush_hair_u_nm_np1_fr_med_0.avi", 0, 1)],
    "ride_bike": [("Bike_ride_ride_bike_f_cm_np1_ba_med_0.avi", 1, 0),
                  ("#122_Cleaning_Up_The_Beach_ride_bike_f_cm_np1_le_med_0.avi", 1, 1),
                  ("Extreme_Biking_ride_bike_f_cm_np1_fr_bad_1.avi", 2, 2)],
}


def test_hmdb51_miniature_tree(tmp_path):
    root, lists = tmp_path / "hmdb51", tmp_path / "testTrainMulti_7030_splits"
    lists.mkdir()
    for label, videos in HMDB.items():
        for video, *_ in videos:  # matching reads names only: empty files do
            (root / label).mkdir(parents=True, exist_ok=True)
            (root / label / video).touch()
        for split in (1, 2):  # the official files end lines with a blank
            (lists / f"{label}_test_split{split}.txt").write_text("".join(f"{v} {t[split - 1]} \n" for v, *t in videos))
    (root / "ride_bike" / "stray.avi").touch()
    for split, train, test, unused in ((1, 3, 2, 1), (2, 3, 2, 1)):
        out = tmp_path / f"split{split}.csv"
        matched = make_manifest("hmdb51", str(root), str(lists), split, str(out))
        rows = read_manifest(out)
        assert Counter(row.split for row in rows) == {"train": train, "test": test}
        assert {row.label for row in rows} == set(HMDB)
        expected = {(f"{label}/{v}", "train" if t[split - 1] == 1 else "test")
                    for label, videos in HMDB.items() for v, *t in videos if t[split - 1]}
        assert {(str(Path(row.resolved).relative_to(root)), row.split) for row in rows} == expected
        report = format_report(matched, str(out))
        assert f"unused: {unused} listed videos are in neither split (tag 0)" in report
        assert "unlisted: 1 .avi files on disk are in no list, not used: ride_bike/stray.avi" in report
        assert "classes: the lists define 2; the full dataset has 51" in report


@pytest.mark.integration
def test_xdc_dataset_hmdb51_missing_video_exits_2(tmp_path):
    lists = tmp_path / "splits"
    lists.mkdir()
    (lists / "ride_bike_test_split1.txt").write_text("a.avi 1\nb.avi 2\n")
    (tmp_path / "hmdb51" / "ride_bike").mkdir(parents=True)
    (tmp_path / "hmdb51" / "ride_bike" / "a.avi").touch()
    args = ("dataset", "hmdb51", "--root", str(tmp_path / "hmdb51"), "--splits", str(lists), "--split", "1",
            "--out", str(tmp_path / "m.csv"))
    r = xdc(*args)
    assert r.returncode == 2 and "ride_bike/b.avi (ride_bike_test_split1.txt line 2)" in r.stderr, r.stderr
    r = xdc(*args, "--allow-missing")
    assert r.returncode == 0 and "  test:      0 videos, 0 classes (1 missing, left out)" in r.stdout, r.stdout


def test_s3_root_and_manifest(bucket, mini_ucf):
    """A bucket holding the dataset: listed with store.list_keys, the manifest written beside it."""
    root, lists = mini_ucf
    store.upload_dir(root, f"s3://{bucket}/UCF101")
    store.upload_dir(lists, f"s3://{bucket}/ucfTrainTestlist")
    out = f"s3://{bucket}/manifest.csv"
    matched = make_manifest("ucf101", f"s3://{bucket}/UCF101/", f"s3://{bucket}/ucfTrainTestlist", 1, out,
                            allow_missing=True)
    rows = read_manifest(out)
    assert len(rows) == len(matched.videos) == 8 and len(matched.case_matched) == 3
    assert rows[0].path == "UCF101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"
    assert all(store.exists(row.resolved) for row in rows)
