"""``xdc``: the one command line. Each command is a thin caller of the library (``xdc_core``).

    xdc run            the whole loop on one machine (decode, [embed, k-means, train] x N, evaluate)
    xdc sample-data    the embedded synthetic dataset
    xdc decode         a manifest → the training-ready dataset (the plan checked first)
    xdc step ...       one step per process: the commands of the DVC stages (xdc_cli/step.py)
    xdc dvc-yaml       dvc.yaml from the step declarations (xdc_cli/dvc_yaml.py)
    xdc dvc-remote     the DVC remote at the S3 server of XDC_S3_* (keys in .dvc/config.local)
    xdc dataset ...    UCF101 / HMDB51 split lists → a manifest (xdc_cli/dataset.py)
    xdc regress        the UCF101 split-1 regression gate (xdc_cli/regress.py)
    xdc checkpoint     import a released XDC model (xdc_cli/checkpoint.py)
    xdc pipeline ...   Kubeflow: compile, run-local, submit (xdc_cli/pipeline.py; kfp imported then)
    xdc probe, config  inspect media files, print the effective settings

Errors the user can fix (:class:`xdc_core.errors.XdcError`) exit with status 2 and one message.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import yaml

from xdc_core import store
from xdc_core.config import METHODS
from xdc_core.errors import ConfigError, XdcError

from .checkpoint import add_checkpoint_parser
from .dataset import add_dataset_parser
from .dvc_yaml import add_dvc_yaml_parser
from .paths import local_input, local_output
from .pipeline import add_pipeline_parser
from .regress import add_regress_parser
from .settings import add_settings_args, flag_overrides, load_settings, positive_int
from .step import add_step_parser

# --run's shortcut flags and the settings they set
RUN_FLAGS = {"method": "cluster.method", "iterations": "cluster.iterations", "k": "cluster.k", "seed": "seed",
             "device": "device"}


def cmd_sample_data(args: argparse.Namespace) -> int:
    from xdc_core.sample_data import SampleSpec, make_sample_dataset

    try:
        spec = SampleSpec(videos=args.videos, classes=args.classes, seed=args.seed, seconds=args.seconds,
                          kind=args.kind, video_signal=args.video_signal, audio_signal=args.audio_signal,
                          nuisance=args.nuisance)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    manifest = make_sample_dataset(args.out, spec)
    print(f"wrote {spec.videos} {spec.kind} videos of {spec.classes} classes (seed {spec.seed}); manifest: {manifest}")
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from xdc_core.report import format_summary
    from xdc_core.decode import check_accepted, decode_dataset

    overrides = {"decode.workers": args.workers} if args.workers is not None else {}
    cfg, _ = load_settings(args, overrides=overrides)
    with local_output(args.out, folder=True) as out:
        # Decoding needs neither labels nor a k: the loop checks those where it uses them (xdc run
        # before any work, the kmeans and evaluate steps on their inputs).
        summary = decode_dataset(args.manifest, out, cfg, progress=not args.quiet)
    print(format_summary(summary, args.out))
    check_accepted(summary, args.out)  # after the summary and the quarantine list are out
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from xdc_core.report import format_results
    from xdc_core.run import run

    cfg, source = load_settings(args, overrides=flag_overrides(args, RUN_FLAGS))
    print(f"settings: {source}" + ("" if args.config else " (no --config: the default for this machine)"), flush=True)
    log = lambda line: print(line, flush=True)  # noqa: E731
    out, publish = args.out, None
    if store.is_remote(args.out):
        from xdc_core.publish import mirror

        out, publish = mirror(args.out, log)
    metrics = run(args.data, out, cfg, evaluate=not args.no_eval, progress=not args.quiet, log=log, publish=publish,
                  processes=args.nproc_per_node, name=args.out)
    if "probe" in metrics:
        print(format_results(metrics))
    out = str(args.out).rstrip("/")
    print(f"metrics: {out}/metrics.json; encoders: {out}/video_encoder.pt, {out}/audio_encoder.pt "
          f"({metrics['seconds']:.0f} s)")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from xdc_core.media import probe
    from xdc_core.media.errors import MediaError

    status = 0
    for uri in args.files:
        with local_input(uri) as path:
            try:
                print(json.dumps(asdict(probe(path)), indent=2))
            except MediaError as err:
                print(f"{uri}: {err.reason}", file=sys.stderr)
                status = 1
    return status


def cmd_config(args: argparse.Namespace) -> int:
    cfg, _ = load_settings(args)
    print(yaml.safe_dump(cfg.model_dump(), sort_keys=False), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The whole ``xdc`` parser (nothing heavy is imported to build it)."""
    parser = argparse.ArgumentParser(
        prog="xdc", description="Self-supervised audio-visual pretraining by Cross-Modal Deep Clustering (XDC).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="the whole XDC loop on one machine: decode, [embed, k-means, train] x N, evaluate")
    p.add_argument("--data", help="manifest CSV or decoded dataset folder, a path or s3:// URI "
                                  "(default: the embedded sample dataset, written to OUT/sample)")
    p.add_argument("--out", required=True, help="output folder or s3:// URI (rerunning on it resumes)")
    p.add_argument("--method", choices=METHODS, help="deep-clustering method, paper §3 (default: cluster.method)")
    p.add_argument("--iterations", type=int, help="clustering iterations (cluster.iterations)")
    p.add_argument("--k", type=int, help="k-means clusters (cluster.k)")
    p.add_argument("--seed", type=int, help="seed of every random choice (seed)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="device (default: auto = cuda when present)")
    p.add_argument("--nproc-per-node", type=positive_int, default=1, metavar="N",
                   help="embed and train data-parallel in N processes, one per GPU of this machine (default 1); "
                   "train.batch_size is per process, train.lr_scaling says how the lr follows")
    p.add_argument("--no-eval", action="store_true", help="pretrain only (for data without labels)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--metrics-port", type=int, metavar="PORT",
                   help="serve the run's Prometheus metrics at http://127.0.0.1:PORT/metrics while it runs")
    add_settings_args(p)
    p.set_defaults(func=cmd_run)

    from xdc_core.sample_data import KINDS, SampleSpec  # its defaults are the help's

    p = sub.add_parser("sample-data", help="write the embedded synthetic sample dataset and its manifest")
    p.add_argument("--out", type=Path, required=True, help="folder for the videos and manifest.csv")
    p.add_argument("--videos", type=int, default=SampleSpec.videos, help=f"number of videos (default {SampleSpec.videos})")
    p.add_argument("--classes", type=int, default=SampleSpec.classes,
                   help=f"number of latent classes (default {SampleSpec.classes}, at most 12)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--seconds", type=float, default=SampleSpec.seconds, help=f"length of each video (default {SampleSpec.seconds})")
    p.add_argument("--kind", default=SampleSpec.kind, choices=KINDS,
                   help="how the class is drawn: shapes (moving shapes, pulsed tones: the embedded default), "
                        "gratings (drifting gratings, amplitude-modulated tones), pinwheels (turning pinwheels, "
                        "frequency sweeps); see xdc_core/sample_data.py")
    p.add_argument("--video-signal", type=float, default=1.0,
                   help="strength of the class in the picture, 0-4 (default 1; lower is harder)")
    p.add_argument("--audio-signal", type=float, default=1.0,
                   help="strength of the class in the sound, 0-4 (default 1; lower is harder)")
    p.add_argument("--nuisance", type=float, default=1.0,
                   help="strength of every nuisance (colour, texture, noise, distractor tones, loudness), 0-4 (default 1)")
    p.set_defaults(func=cmd_sample_data)

    p = sub.add_parser("decode", help="validate and decode the videos of a manifest into a training-ready dataset")
    p.add_argument("--manifest", required=True, help="CSV with header path,label,split: a path or s3:// URI")
    p.add_argument("--out", required=True, help="decoded dataset folder or s3:// URI (rerunning on a folder resumes)")
    p.add_argument("--workers", type=int, help="worker processes (decode.workers)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_settings_args(p)
    p.set_defaults(func=cmd_decode)

    add_step_parser(sub)
    add_checkpoint_parser(sub)
    add_dataset_parser(sub)
    add_dvc_yaml_parser(sub)
    add_pipeline_parser(sub)
    add_regress_parser(sub)

    p = sub.add_parser("probe", help="print the streams, duration and frame rate of media files")
    p.add_argument("files", nargs="+", help="media files, paths or s3:// URIs")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("config", help="print the effective settings (--config file or preset, --set overrides)")
    add_settings_args(p)
    p.set_defaults(func=cmd_config)
    return parser


def _metrics_exported(args: argparse.Namespace) -> AbstractContextManager[None]:
    """The metrics of the commands that compute, pushed to $XDC_PUSHGATEWAY under a task name like
    ``train-video-2`` (and served with ``xdc run --metrics-port``); other commands export nothing."""
    if args.command not in ("run", "decode", "step"):
        return nullcontext()
    from xdc_core.metrics import exported

    parts = [args.command if args.command != "step" else args.step, getattr(args, "modality", None),
             getattr(args, "iteration", None)]
    return exported("-".join(str(p) for p in parts if p is not None), port=getattr(args, "metrics_port", None))


def user_fixable(err: OSError) -> str | None:
    """What a filesystem error the user can fix (a full disk, a read-only or misnamed OUT) means and
    what to do, in one sentence; None for any other error."""
    where = f" {err.filename}" if err.filename else ""
    fixes = {
        errno.ENOSPC: f"no space left on the device to write{where}: free some space (rerunning resumes) or "
                      "write elsewhere (--out)",
        errno.EDQUOT: f"disk quota exceeded writing{where}: free some space (rerunning resumes) or write "
                      "elsewhere (--out)",
        errno.EFBIG: f"file too large for the filesystem or the file-size limit (ulimit -f) writing{where}: raise "
                     "the limit or write elsewhere (--out)",
        errno.EACCES: f"permission denied:{where}: choose a folder you can write (--out) or fix its permissions",
        errno.EPERM: f"operation not permitted:{where}: choose a folder you can write (--out) or fix its "
                     "permissions",
        errno.EROFS: f"read-only filesystem:{where}: write elsewhere (--out)",
        errno.ENOTDIR: f"{where.strip()}: a part of this path is a file, not a folder: choose another path",
        errno.EEXIST: f"{where.strip()} exists and is a file, not a folder: choose another path",
        errno.EISDIR: f"{where.strip()} is a folder, where a file is expected: choose another path",
    }
    if not where and err.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        return None if err.errno is None else f"{err.strerror}: choose another path"
    return fixes.get(err.errno)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``xdc``: 0 done, 2 unusable input, settings or storage, 130 interrupted."""
    args = build_parser().parse_args(argv)
    name = " ".join(filter(None, [args.command, getattr(args, "step", None), getattr(args, "pipeline_command", None)]))
    try:
        with _metrics_exported(args):
            return int(args.func(args))
    except XdcError as err:
        print(f"xdc {name}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        reason = user_fixable(err)
        if reason is None:
            raise  # a bug: keep its traceback
        print(f"xdc {name}: error: {reason}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"xdc {name}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
