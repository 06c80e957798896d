"""``xdc checkpoint import``: a released video model → an encoder checkpoint of ours.

    xdc checkpoint import FILE --arch r2plus1d_18_vmz --out encoder.pt

FILE and ``--out`` may be paths or object-store URIs (:mod:`xdc_cli.paths`). The library does the
work (:func:`xdc_core.checkpoint.import_checkpoint`); this module only parses and reports.
"""

from __future__ import annotations

import argparse

from xdc_core.config import VIDEO_ARCHS
from xdc_core.errors import InputError

from .paths import local_input, local_output


def cmd_import(args: argparse.Namespace) -> int:
    from xdc_core.checkpoint import RELEASED_WIDTH, import_checkpoint  # torch: only when a command runs

    with local_input(args.file) as src, local_output(args.out) as out:
        try:
            summary = import_checkpoint(src, args.arch, out)
        except InputError as err:  # name the file as the user gave it, not a fetched copy of an s3:// URI
            raise InputError(str(err).replace(str(src), args.file)) from None
    dropped = ", ".join(summary.dropped) or "nothing"
    print(f"checkpoint import: {args.file} → {args.out}: {summary.arch} video encoder of width {RELEASED_WIDTH}, "
          f"{summary.tensors} tensors, {summary.parameters / 1e6:.2f} M parameters (dropped: {dropped})")
    print(f"use it with --set model.video_arch={summary.arch} --set model.video_width={RELEASED_WIDTH}")
    return 0


def add_checkpoint_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``xdc checkpoint`` and its sub-commands on the top-level sub-parsers."""
    p = sub.add_parser("checkpoint", help="import a released video model as an encoder checkpoint")
    commands = p.add_subparsers(dest="checkpoint_command", metavar="COMMAND", required=True)
    q = commands.add_parser(
        "import",
        help="a released XDC video model (.pth state dict) → our encoder format",
        description="Load a released .pth (e.g. r2plus1d_18_xdc_ig65m_kinetics-f24f6ffb.pth of "
                    "github.com/HumamAlwassel/XDC) strictly into the video trunk of --arch (width 64), drop "
                    "its classifier (fc) and write the trunk's state dict, as `xdc step` writes encoders.",
    )
    q.add_argument("file", metavar="FILE", help="the released checkpoint: a path or s3:// URI")
    q.add_argument("--arch", required=True, choices=VIDEO_ARCHS,
                   help="its video architecture (model.video_arch); the released XDC models are r2plus1d_18_vmz")
    q.add_argument("--out", required=True, help="the encoder checkpoint to write: a path or s3:// URI")
    q.set_defaults(func=cmd_import)
