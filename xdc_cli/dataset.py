"""``xdc dataset ucf101|hmdb51``: an extracted benchmark dataset and its official split files → a manifest.

    xdc dataset ucf101 --root UCF101/ --splits ucfTrainTestlist/ --split 1 --out manifest.csv [--allow-missing]
    xdc dataset hmdb51 --root hmdb51/ --splits testTrainMulti_7030_splits/ --split 1 --out manifest.csv

A thin caller of :func:`xdc_core.datasets.make_manifest`; the summary it prints is
:func:`xdc_core.datasets.format_report`.
"""

from __future__ import annotations

import argparse

from xdc_core.datasets import SPLIT_NUMBERS

LAYOUTS = {
    "ucf101": ("UCF101 (101 classes)", "the extracted UCF-101 folder: <Class>/v_<Class>_gNN_cNN.avi",
               "ucfTrainTestlist/: classInd.txt, trainlist0N.txt, testlist0N.txt"),
    "hmdb51": ("HMDB51 (51 classes)", "the extracted folder of class folders: <class>/<video>.avi",
               "testTrainMulti_7030_splits/: <class>_test_splitN.txt (1 = train, 2 = test, 0 = unused)"),
}


def cmd_dataset(args: argparse.Namespace) -> int:
    from xdc_core.datasets import format_report, make_manifest

    matched = make_manifest(args.dataset, args.root, args.splits, args.split, args.out, args.allow_missing)
    print(format_report(matched, args.out))
    return 0


def add_dataset_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``xdc dataset ucf101|hmdb51``."""
    p = sub.add_parser("dataset", help="a benchmark dataset's official split → a manifest (ucf101, hmdb51)")
    datasets = p.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    for name, (title, root, splits) in LAYOUTS.items():
        d = datasets.add_parser(
            name, help=f"{title}: one official split → manifest.csv (path,label,split)",
            description=f"Write the manifest of one official {title} split. Listed videos are matched ignoring "
                        "case when the exact path is missing; the summary reports that, missing videos and "
                        ".avi files no list names.")
        d.add_argument("--root", required=True,
                       help=f"{root}; a path, or an s3:// URI when --out is one too")
        d.add_argument("--splits", required=True, help=f"the official split files, a path or s3:// URI: {splits}")
        d.add_argument("--split", type=int, choices=SPLIT_NUMBERS, required=True, help="which official split")
        d.add_argument("--out", required=True,
                       help="the manifest to write (atomically), a path or s3:// URI; its paths are relative to its "
                            "folder when the videos are inside it, else absolute")
        d.add_argument("--allow-missing", action="store_true",
                       help="leave listed videos that are not on disk out of the manifest (default: exit 2)")
        d.set_defaults(func=cmd_dataset)
