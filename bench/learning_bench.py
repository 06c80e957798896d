"""Learning benchmark, in the spirit of the paper's Table 1: does pretraining beat random init?

On a labelled dataset — a member of the synthetic family (bench/family.yaml: the embedded sample
data and its harder and differently drawn relatives) or any labelled manifest of yours (--data) —
with the same settings, budget and seeds for every row: random init, SDC, MDC, CDC, XDC, and a
supervised reference (the same loop with the true labels as both
encoders' targets). For every method and seed: linear-probe top-1 on the test split after each
clustering iteration, the paired difference from the same seed's random-init probe on the same
test videos with a 95% bootstrap interval, and the per-iteration cluster statistics (purity, the
video-audio cluster NMI and its shuffled chance level).

Before any method is compared it measures the data (the calibration): whether random-init clusters
carry some of the class (NMI with the labels against its shuffled chance level), whether the two
modalities' random-init clusters agree beyond chance (what XDC bootstraps from), and whether the
supervised reference beats random init by >= 0.3 on both modalities. Where they do not, XDC is not
expected to gain: the results say so next to the gains. It writes what it ran (settings file,
overrides, video count, git commit, machine), the results, a Markdown table (``.md``) and a plot
(``.png``) next to the JSON file. Runs start from scratch each time (the sample data, the decoded
dataset and its clip cache are deterministic and reused); each run's encoders stay in
``--work``/runs/DATASET/METHOD_seedS/, named in the results with their SHA-256, for
bench/finetune_bench.py.

The methods can run in parts (``--methods xdc``, then ``--methods sdc mdc``, on other days or
machines) and ``--merge`` joins the parts' result files into one table, refusing parts that differ
in data, settings, seeds, random-init answers or learning code (a digest of ``xdc_core/``).

Usage: python bench/learning_bench.py --out bench/results/learning.json [--seeds 0 1 2]
       [--member NAME | --data MANIFEST | --videos 2000 --classes 8]
       [--config xdc_core/presets/cpu-demo.yaml] [--set KEY=VALUE] [--calibrate-only]
       python bench/learning_bench.py --merge PART.json PART.json ... --out bench/results/learning.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from xdc_core.config import MODALITIES, Config, load_config
from xdc_core.dataset import ClipDataset
from xdc_core.decode import decode_dataset
from xdc_core.diagnosis import AGREEMENT_Z, JUDGED_STATISTICS, agreement_z, final_iteration, findings
from xdc_core.evaluate import paired_bootstrap, probe_encoder
from xdc_core.kmeans import cross_modal_nmi, kmeans, nmi_with_chance
from xdc_core.layout import RunLayout
from xdc_core.report import format_train
from xdc_core.run import run
from xdc_core.sample_data import SampleSpec, make_sample_dataset
from xdc_core.steps import embed_step, evaluate_step, init_encoder, load_encoder, train_on_targets

METHODS = ["supervised", "xdc", "sdc", "mdc", "cdc"]
SUPERVISED_MARGIN = 0.3  # the calibration: a learnable dataset lets labels beat random init by this much


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
        return out + ("+uncommitted changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}"


FAMILY = Path(__file__).with_name("family.yaml")


def family() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(FAMILY.read_text())


def dataset_spec(args: argparse.Namespace) -> tuple[str, SampleSpec | None]:
    """What to benchmark on: (a name for it, the sample spec to generate, or None for --data)."""
    if args.data:
        return str(args.data), None
    if args.member:
        members = family()
        if args.member not in members:
            raise SystemExit(f"--member {args.member!r} is not in {FAMILY} (members: {', '.join(members)})")
        return args.member, SampleSpec(**members[args.member], seed=args.data_seed)
    return "sample", SampleSpec(videos=args.videos, classes=args.classes, seed=args.data_seed)


def prepare(args: argparse.Namespace, cfg: Config, spec: SampleSpec | None) -> tuple[Path, dict[str, float]]:
    """The manifest (the sample data by its spec, or --data) and its decoded dataset (by the decode
    settings), reused if present."""
    timings: dict[str, float] = {}
    if spec is None:
        manifest = Path(args.data)
        name = f"data-{hashlib.sha1(str(manifest.resolve()).encode()).hexdigest()[:8]}"
    else:
        fields = spec.__dataclass_fields__
        name = "sample-" + hashlib.sha1(json.dumps({k: getattr(spec, k) for k in fields}).encode()).hexdigest()[:8]
        manifest = args.work / name / "manifest.csv"
        t0 = time.perf_counter()
        if not manifest.is_file():
            make_sample_dataset(manifest.parent, spec)
        timings["sample_data_s"] = round(time.perf_counter() - t0, 1)
    key = hashlib.sha1(json.dumps([cfg.data.model_dump(), cfg.decode.model_dump()]).encode()).hexdigest()[:8]
    decoded = args.work / f"{name}-decoded-{key}"
    t0 = time.perf_counter()
    decode_dataset(manifest, decoded, cfg, progress=False)
    timings["decode_s"] = round(time.perf_counter() - t0, 1)
    return decoded, timings


def calibration(decoded: Path, cfg: Config, seed: int, work: Path) -> dict[str, Any]:
    """Random-init clusters vs the labels and vs each other, each with its shuffled chance level."""
    c = cfg.model_copy(update={"seed": seed})
    feats = {m: np.load(embed_step(decoded, m, c, None, work / f"calib_seed{seed}_{m}.npz", progress=False))
             for m in MODALITIES}
    labels = feats["video"]["labels"]
    assign = {m: kmeans(feats[m]["features"], c.cluster.k, seed=seed, use_gpu=False).assignments for m in MODALITIES}
    out: dict[str, Any] = {}
    for m in MODALITIES:
        with_labels = nmi_with_chance(assign[m], labels, seed)
        out[m] = {"nmi_labels": with_labels["nmi"], "nmi_labels_chance": with_labels["nmi_chance"],
                  "z": round(agreement_z(with_labels) or 0.0, 1)}
    cross = cross_modal_nmi(assign["video"], assign["audio"], seed)
    out["cross_modal"] = cross | {"z": round(agreement_z(cross) or 0.0, 1)}
    return out


def supervised_run(decoded: Path, out: Path, cfg: Config, labels: np.ndarray, log: Any) -> dict[str, Any]:
    """The upper bound: the loop of :func:`xdc_core.run.run` with the class labels as both
    encoders' targets in every iteration instead of clusters (same schedule, same evaluation)."""
    layout = RunLayout(out)
    stats = []
    for it in range(1, cfg.cluster.iterations + 1):
        train = {m: train_on_targets(decoded, m, cfg, it, [labels], layout.encoder(it - 1, m) if it > 1 else None,
                                     layout.encoder(it, m), layout.checkpoints(it, m), progress=False)
                 for m in MODALITIES}
        log(" | ".join([f"iter {it}/{cfg.cluster.iterations} class labels",
                        *(format_train(m, r) for m, r in train.items())]))
        stats.append({"iteration": it, "clusters": {}, "train": train})
    encoders = {m: layout.encoder(cfg.cluster.iterations, m) for m in MODALITIES}
    return {**evaluate_step(decoded, cfg, encoders, progress=False, log=log), "iteration_stats": stats}


def probe_curve(decoded: Path, cfg: Config, out: Path, metrics: dict[str, Any], random: dict[str, Any],
                final_from: dict[str, int]) -> dict:
    """Probe top-1 after each iteration (0 = random init; the last one is the run's own evaluation
    where the run returned that iteration's encoder, ``final_from``)."""
    last = cfg.cluster.iterations
    curve: dict[str, list[float]] = {m: [random[m]["top1"]] for m in MODALITIES}
    for m in MODALITIES:
        for it in range(1, last + 1):
            if it == last and final_from[m] == last:
                curve[m].append(metrics["probe"][m]["top1"])
                continue
            trunk = load_encoder(m, cfg, out / f"iter_{it:02d}" / f"{m}_encoder.pt")
            curve[m].append(probe_encoder(decoded, cfg, m, trunk, progress=False)["top1"])
    return curve


def summarise(runs: dict[str, list[dict[str, Any]]], random: list[dict[str, Any]]) -> dict[str, Any]:
    """Per method and modality: mean ± std top-1 over seeds, and the paired difference from random
    init pooled over seeds (bootstrap over test videos, pairing by seed and video kept)."""
    table: dict[str, Any] = {"random-init": {}}
    for m in MODALITIES:
        tops = [r[m]["top1"] for r in random]
        table["random-init"][m] = {"mean": round(statistics.mean(tops), 4),
                                   "std": round(statistics.stdev(tops), 4) if len(tops) > 1 else 0.0}
    for method, entries in runs.items():
        table[method] = {}
        for m in MODALITIES:
            tops = [e["probe"][m]["top1"] for e in entries]
            pooled = paired_bootstrap(np.array([e["probe"][m]["correct"] for e in entries]),
                                      np.array([random[i][m]["correct"] for i in range(len(entries))]))
            table[method][m] = {
                "mean": round(statistics.mean(tops), 4),
                "std": round(statistics.stdev(tops), 4) if len(tops) > 1 else 0.0,
                "delta_vs_random": pooled["delta"], "delta_ci95": pooled["ci95"],
                "per_seed_delta": [e["probe_vs_random"][m] for e in entries],
            }
    return table


def calibration_markdown(dataset: str, calib: dict[str, Any]) -> str:
    """The data before any method: can XDC bootstrap here? (mean over seeds, chance in brackets)"""
    def mean(get: Any) -> float:
        return statistics.mean(get(v) for v in calib.values())

    cells = [f"{mean(lambda v, m=m: v[m]['nmi_labels']):.3f} ({mean(lambda v, m=m: v[m]['nmi_labels_chance']):.3f})"
             for m in MODALITIES]
    cross = (f"{mean(lambda v: v['cross_modal']['nmi']):.3f} "
             f"({mean(lambda v: v['cross_modal']['nmi_chance']):.3f})")
    z = {k: mean(lambda v, k=k: v[k]["z"]) for k in (*MODALITIES, "cross_modal")}
    return ("Random-init k-means clusters of the data, mean over seeds: NMI (its shuffled chance level); how many "
            "shuffle standard deviations above chance. XDC has something to bootstrap from where the clusters "
            f"of both modalities carry the class (>= {AGREEMENT_Z:g} deviations above chance).\n\n"
            "| data | NMI with labels, video | NMI with labels, audio | video-audio NMI |\n"
            "|---|---|---|---|\n"
            f"| {dataset} | {cells[0]}; {z['video']:+.0f} sd | {cells[1]}; {z['audio']:+.0f} sd "
            f"| {cross}; {z['cross_modal']:+.0f} sd |\n")


def markdown(table: dict[str, Any], runs: dict[str, list[dict[str, Any]]], seeds: list[int]) -> str:
    lines = ["| method | video top-1 | video Δ vs random [95% CI] | audio top-1 | audio Δ vs random [95% CI] "
             "| run time per seed (s) |", "|---|---|---|---|---|---|"]
    for method, row in table.items():
        cells = []
        for m in MODALITIES:
            r = row[m]
            cells.append(f"{r['mean']:.3f} ± {r['std']:.3f}")
            cells.append(f"{r['delta_vs_random']:+.3f} [{r['delta_ci95'][0]:+.3f}, {r['delta_ci95'][1]:+.3f}]"
                         if "delta_vs_random" in r else "—")
        secs = statistics.mean(e["seconds"] for e in runs[method]) if method in runs else None
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {'—' if secs is None else f'{secs:.0f}'} |")
    lines += ["", "Per seed, paired difference from the same seed's random init (video / audio):", "",
              "| method | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---|" * len(seeds)]
    for method, entries in runs.items():
        cells = []
        for e in entries:
            v, a = e["probe_vs_random"]["video"], e["probe_vs_random"]["audio"]
            cells.append(f"{v['delta']:+.3f} [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}] / "
                         f"{a['delta']:+.3f} [{a['ci95'][0]:+.3f}, {a['ci95'][1]:+.3f}]")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    said = {method: [e["seed"] for e in entries if e.get("findings")] for method, entries in runs.items()}
    if any(said.values()):
        lines += ["", "Runs that told their user they were not learning (xdc_core/diagnosis.py): " + "; ".join(
            f"{method} seed{'s' if len(s) > 1 else ''} {', '.join(map(str, s))}" for method, s in said.items() if s)]
    else:
        lines += ["", "No run told its user it was not learning (xdc_core/diagnosis.py)."]
    returned = [f"{method} seed {e['seed']} {m}" for method, entries in runs.items() for e in entries
                for m, it in (e.get("final_from") or {}).items() if it == 0]
    if returned:
        lines += ["", "Runs that returned an encoder's random init, none of its iterations having beaten chance by "
                  "train.learned_margin: " + "; ".join(returned) + "."]
    return "\n".join(lines) + "\n"


def plot(runs: dict[str, list[dict[str, Any]]], path: Path, seed0: int) -> None:
    """Per method: probe top-1 per iteration (video, audio; first seed) and the video-audio
    cluster NMI per iteration with its chance level (mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    colours = dict(zip(METHODS, plt.get_cmap("tab10").colors, strict=False))
    for method, entries in runs.items():
        c = colours[method]
        for ax, m in zip(axes[:2], MODALITIES, strict=True):
            curve = np.mean([e["probe_curve"][m] for e in entries if e["probe_curve"]], axis=0)
            ax.plot(range(len(curve)), curve, marker="o", color=c, label=method)
        if method != "supervised":
            cross = np.mean([[it["cross_modal"]["nmi"] for it in e["clusters"]] for e in entries], axis=0)
            chance = np.mean([[it["cross_modal"]["nmi_chance"] for it in e["clusters"]] for e in entries], axis=0)
            its = range(1, len(cross) + 1)
            axes[2].plot(its, cross, marker="o", color=c, label=method)
            axes[2].plot(its, chance, ls=":", color=c)
    for ax, m in zip(axes[:2], MODALITIES, strict=True):
        ax.set(title=f"{m} encoder: linear-probe top-1 (seed {seed0})", xlabel="clustering iteration (0 = random init)",
               ylabel="test top-1")
    axes[2].set(title="video-audio cluster NMI (mean over seeds; dotted: chance)", xlabel="clustering iteration",
                ylabel="NMI")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[2].legend()
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def calibration_checks(calib: dict[str, Any], table: dict[str, Any]) -> dict[str, Any]:
    """Can XDC bootstrap on this data? Every seed's random-init clusters against chance, and the
    supervised reference's margin over random init where it ran."""
    checks: dict[str, Any] = {
        "random_init_clusters_carry_class": {
            m: all(v[m]["z"] >= AGREEMENT_Z for v in calib.values()) for m in MODALITIES},
        # Informational: near chance at init even where XDC learns (the clusters follow the nuisances).
        "cross_modal_nmi_above_chance_at_init": all(v["cross_modal"]["z"] >= AGREEMENT_Z for v in calib.values()),
    }
    if "supervised" in table:
        checks[f"supervised_beats_random_by_{SUPERVISED_MARGIN}"] = {
            m: table["supervised"][m]["mean"] - table["random-init"][m]["mean"] >= SUPERVISED_MARGIN
            for m in MODALITIES}
    return checks


def write_results(results: dict[str, Any], out: Path) -> None:
    """The JSON file, its Markdown table (.md) and its plot (.png)."""
    table, runs, calib = results["table"], results["runs"], results["calibration"]["per_seed"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    md = calibration_markdown(results["ran"]["dataset"], calib) + (
        "\n" + markdown(table, runs, results["ran"]["seeds"]) if table else "")
    out.with_suffix(".md").write_text(md)
    if table:
        plot(runs, out.with_suffix(".png"), results["ran"]["seeds"][0])
    print(md)
    print(json.dumps(results["calibration"]["checks"], indent=1))
    print(f"results: {out} (+ .md, .png); {results['timings']['total_s']:.0f} s in all", file=sys.stderr)


# What must be equal for two parts to be one benchmark (besides the learning code and the random init).
SAME_BENCHMARK = ("dataset", "sample_spec", "data_seed", "seeds", "config", "overrides", "pretrain_videos",
                  "test_videos")


def encoder_record(path: Path) -> dict[str, str]:
    return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def learning_code() -> str:
    """A digest of xdc_core/ (code and presets) as it is on disk: what the results depend on, whether
    or not it is committed. Parts with the same digest ran the same learning code."""
    root = Path(__file__).resolve().parents[1] / "xdc_core"
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in {".py", ".yaml"}):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def merge(paths: list[Path]) -> dict[str, Any]:
    """One result from parts that ran different methods of the same benchmark (same data, settings,
    seeds and learning code; their random-init probes must have given the same answers)."""
    parts = [json.loads(p.read_text()) for p in paths]
    first, seen = parts[0], {m: paths[0] for m in parts[0]["runs"]}
    for path, part in zip(paths[1:], parts[1:], strict=True):
        for key in SAME_BENCHMARK:
            if part["ran"][key] != first["ran"][key]:
                raise SystemExit(f"--merge: {path} ran {key} = {part['ran'][key]!r} but {paths[0]} ran "
                                 f"{first['ran'][key]!r}: only parts of the same benchmark merge")
        for what, get in (("settings", lambda r: r["settings"]), ("random-init answers", lambda r: r["random_init"]),
                          ("calibration", lambda r: r["calibration"]["per_seed"])):
            if get(part) != get(first):
                raise SystemExit(f"--merge: {path} and {paths[0]} differ in their {what}: only parts of the same "
                                 "benchmark, run by the same code, merge")
        code = part["ran"].get("learning_code")
        if code is None or code != first["ran"].get("learning_code"):
            raise SystemExit(f"--merge: {path} and {paths[0]} ran different learning code (xdc_core/ digest "
                             f"{code} vs {first['ran'].get('learning_code')}; none: "
                             "written before the digest was recorded): rerun the older part with the current code")
        for method in part["runs"]:
            if method in seen:
                raise SystemExit(f"--merge: {method} ran in both {seen[method]} and {path}: keep one of them")
            seen[method] = path
    if not first["random_init"]:
        raise SystemExit(f"--merge: {paths[0]} ran no method (--calibrate-only?): nothing to merge")
    if any("correct" not in r["video"] for r in first["random_init"]):
        raise SystemExit(f"--merge: {paths[0]} predates per-video random-init answers in the results: rerun it")
    runs = {m: e for m in METHODS for part in parts for method, e in part["runs"].items() if method == m}
    commits = list(dict.fromkeys(part["ran"]["git_commit"] for part in parts))
    ran = first["ran"] | {
        "methods": list(runs), "git_commit": commits[0] if len(commits) == 1 else ", ".join(commits),
        "machine": ", ".join(dict.fromkeys(part["ran"]["machine"] for part in parts)),
        "command": " ".join(["python", *sys.argv]),
        "parts": [{"file": str(path), "methods": part["ran"]["methods"], "git_commit": part["ran"]["git_commit"],
                   "machine": part["ran"]["machine"], "command": part["ran"]["command"],
                   "total_s": part["timings"]["total_s"]} for path, part in zip(paths, parts, strict=True)],
    }
    table = summarise(runs, first["random_init"])
    return first | {
        "ran": ran, "runs": runs, "table": table,
        "timings": {"total_s": round(sum(part["timings"]["total_s"] for part in parts), 1)},
        "calibration": first["calibration"] | {"checks": calibration_checks(first["calibration"]["per_seed"], table)},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results/learning.json"))
    ap.add_argument("--config", type=Path, default=Path("xdc_core/presets/cpu-demo.yaml"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    data = ap.add_mutually_exclusive_group()
    data.add_argument("--data", type=Path, help="a labelled manifest of yours (path,label,split) to benchmark on")
    data.add_argument("--member", help=f"a member of the synthetic family ({', '.join(family())}; {FAMILY.name})")
    ap.add_argument("--videos", type=int, default=SampleSpec.videos, help="sample videos (default: the demo's)")
    ap.add_argument("--classes", type=int, default=SampleSpec.classes)
    ap.add_argument("--calibrate-only", action="store_true",
                    help="measure the data (random-init cluster NMIs with their chance levels) and stop")
    ap.add_argument("--data-seed", type=int, default=0, help="seed of the sample generator")
    ap.add_argument("--work", type=Path, default=Path("bench/work/learning"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--merge", type=Path, nargs="+", metavar="PART.json",
                    help="join result files that ran different methods of one benchmark into --out, and stop")
    args = ap.parse_args()
    if args.merge:
        write_results(merge(args.merge), args.out)
        return 0
    # The code that runs, not what is committed or edited later.
    started, commit, code = time.perf_counter(), git_commit(), learning_code()

    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    cfg = load_config(args.config, overrides)
    dataset, spec = dataset_spec(args)
    decoded, timings = prepare(args, cfg, spec)
    # Every run from scratch, in a folder of this dataset's: the runs of other parts and of other
    # datasets in the same --work stay, for bench/finetune_bench.py.
    runs_dir = args.work / "runs" / decoded.name
    for seed in args.seeds:
        for stale in [*runs_dir.glob(f"calib_seed{seed}_*"),
                      *(runs_dir / f"{method}_seed{seed}" for method in args.methods)]:
            if stale.is_dir():
                shutil.rmtree(stale)
            else:
                stale.unlink(missing_ok=True)
    pretrain_labels = np.asarray(ClipDataset(decoded, cfg.data, "eval", cfg.train.split, ("audio",), clips=1).labels)
    log = lambda tag: (lambda line: print(f"[{tag}]", line, flush=True))  # noqa: E731

    random: list[dict[str, Any]] = []
    calib: dict[str, Any] = {}
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in args.methods}
    for seed in args.seeds:
        calib[str(seed)] = calibration(decoded, cfg.model_copy(update={"seed": seed}), seed, runs_dir)
        log(f"calibration seed {seed}")(json.dumps(calib[str(seed)]))
    for seed in [] if args.calibrate_only else args.seeds:
        c = cfg.model_copy(update={"seed": seed})
        random.append({m: probe_encoder(decoded, c, m, init_encoder(m, c), progress=False) for m in MODALITIES})
        for method in args.methods:
            out = runs_dir / f"{method}_seed{seed}"
            mc = c if method == "supervised" else c.model_copy(
                update={"cluster": c.cluster.model_copy(update={"method": method})})
            t0 = time.perf_counter()
            metrics = (supervised_run(decoded, out, mc, pretrain_labels, log(f"{method} seed {seed}"))
                       if method == "supervised" else run(decoded, out, mc, progress=False,
                                                          log=log(f"{method} seed {seed}")))
            seconds = round(time.perf_counter() - t0, 1)
            # The run's own random-init probe is the same computation as `random` (same seed, same init).
            assert metrics["baseline_random"]["video"]["top1"] == random[-1]["video"]["top1"]
            # Which iteration's encoder the run returned (0: the random init of an encoder that learned nothing).
            final_from = {m: mc.cluster.iterations if method == "supervised" else final_iteration(
                [it["train"][m] for it in metrics["iteration_stats"]], mc) for m in MODALITIES}
            runs[method].append({
                "seed": seed, "seconds": seconds,
                "probe": {m: {k: metrics["probe"][m][k] for k in ("top1", "lr", "correct")} for m in MODALITIES},
                "probe_vs_random": metrics["probe_vs_random"],
                # Probing every iteration costs a probe per iteration: done for the first seed.
                "probe_curve": probe_curve(decoded, mc, out, metrics, random[-1], final_from)
                if seed == args.seeds[0] else None,
                "clusters": [it["clusters"] for it in metrics["iteration_stats"]],
                "train": [{m: {k: it["train"][m].get(k) for k in JUDGED_STATISTICS} for m in MODALITIES}
                          for it in metrics["iteration_stats"]],
                # What the run told its user about whether it learns (xdc_core/diagnosis.py).
                "findings": findings(metrics["iteration_stats"], mc.cluster.k, mc.train.learned_margin)
                if method != "supervised" else [],
                "final_from": final_from,
                # The encoders the run returned, with their SHA-256: bench/finetune_bench.py refuses
                # files a later run in the same --work has replaced.
                "encoders": {m: encoder_record(RunLayout(out).encoder(mc.cluster.iterations, m)
                                               if method == "supervised" else RunLayout(out).final_encoder(m))
                             for m in MODALITIES},
            })
            print(f"[{method} seed {seed}] probe video {metrics['probe']['video']['top1']:.3f} audio "
                  f"{metrics['probe']['audio']['top1']:.3f} ({seconds:.0f} s)", flush=True)

    table = summarise(runs, random) if random else {}
    test_videos = len(ClipDataset(decoded, cfg.data, "eval", cfg.evaluate.test_split, ("audio",), clips=1))
    results = {
        "ran": {"config": str(args.config), "overrides": overrides, "seeds": args.seeds, "methods": args.methods,
                "dataset": dataset, "sample_spec": None if spec is None else vars(spec),
                "data_seed": args.data_seed,
                "pretrain_videos": int(len(pretrain_labels)), "test_videos": test_videos,
                "decoded": str(decoded),  # for bench/finetune_bench.py
                "git_commit": commit, "learning_code": code, "machine": machine(),
                "command": " ".join(["python", *sys.argv])},
        "timings": timings | {"total_s": round(time.perf_counter() - started, 1)},
        "calibration": {"per_seed": calib, "checks": calibration_checks(calib, table)},
        "table": table,
        "runs": runs,
        # With the per-video answers, so that results run in parts can be merged (--merge).
        "random_init": [{m: {k: r[m][k] for k in ("top1", "correct")} for m in MODALITIES} for r in random],
        "settings": cfg.model_dump(),
    }
    write_results(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
