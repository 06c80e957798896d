"""``bench/learning_bench.py`` on a labelled manifest of the user's (``--data``), run in two parts
(different methods) and joined by ``--merge``, which refuses parts of different benchmarks; then
``bench/finetune_bench.py`` on the encoders both parts left in their shared ``--work``."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import TINY_SETTINGS

REPO = Path(__file__).resolve().parents[1]


def bench(*args: str, script: str = "learning_bench.py") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"bench/{script}", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def parts(tiny_sample, tmp_path_factory) -> dict[str, Path]:
    """The benchmark on the tiny manifest, seed 0: xdc in one part, sdc in another."""
    tmp = tmp_path_factory.mktemp("learning_bench")
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_SETTINGS))
    out = {}
    for method in ("xdc", "sdc"):
        out[method] = tmp / f"{method}.json"
        done = bench("--data", str(tiny_sample), "--config", str(config), "--methods", method, "--seeds", "0",
                     "--work", str(tmp / "work"), "--out", str(out[method]))
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def merged(parts, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("merged") / "learning.json"
    done = bench("--merge", str(parts["xdc"]), str(parts["sdc"]), "--out", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


@pytest.mark.integration
def test_a_manifest_of_yours_gets_the_calibration_and_the_paired_table(parts, tiny_sample):
    result = json.loads(parts["xdc"].read_text())
    assert result["ran"]["dataset"] == str(tiny_sample)
    assert result["ran"]["pretrain_videos"] > 0 and result["ran"]["test_videos"] > 0
    assert set(result["calibration"]["per_seed"]) == {"0"}
    for seed in result["calibration"]["per_seed"].values():
        assert {"video", "audio", "cross_modal"} <= set(seed) and "z" in seed["cross_modal"]
    assert set(result["table"]) == {"random-init", "xdc"}
    assert [e["seed"] for e in result["runs"]["xdc"]] == [0]
    delta = result["table"]["xdc"]["video"]
    assert delta["delta_ci95"][0] <= delta["delta_vs_random"] <= delta["delta_ci95"][1]
    md = parts["xdc"].with_suffix(".md").read_text()
    assert "| xdc |" in md and "NMI with labels" in md
    assert parts["xdc"].with_suffix(".png").stat().st_size > 0


@pytest.mark.integration
def test_merge_joins_parts_into_the_table_each_part_had(parts, merged):
    result = json.loads(merged.read_text())
    xdc, sdc = (json.loads(parts[m].read_text()) for m in ("xdc", "sdc"))
    assert list(result["table"]) == ["random-init", "xdc", "sdc"]
    assert result["table"]["xdc"] == xdc["table"]["xdc"] and result["table"]["sdc"] == sdc["table"]["sdc"]
    assert result["ran"]["methods"] == ["xdc", "sdc"]
    assert [p["methods"] for p in result["ran"]["parts"]] == [["xdc"], ["sdc"]]
    assert result["timings"]["total_s"] == pytest.approx(xdc["timings"]["total_s"] + sdc["timings"]["total_s"])
    assert "| sdc |" in merged.with_suffix(".md").read_text()


@pytest.mark.integration
@pytest.mark.parametrize("change, says", [
    (lambda r: r, "xdc ran in both"),
    (lambda r: r["ran"].update(learning_code="0" * 16), "different learning code"),
    (lambda r: r["ran"].update(seeds=[2]), "ran seeds"),
    (lambda r: r["settings"]["cluster"].update(k=5), "differ in their settings"),
    (lambda r: r["random_init"][0]["video"]["correct"].append(1), "random-init answers"),
])
def test_merge_refuses_parts_of_different_benchmarks(parts, tmp_path, change, says):
    spec = importlib.util.spec_from_file_location("learning_bench", REPO / "bench" / "learning_bench.py")
    assert spec is not None and spec.loader is not None
    learning_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(learning_bench)
    other = json.loads(parts["xdc"].read_text())
    change(other)
    if says != "xdc ran in both":
        other["runs"] = {"sdc": other["runs"].pop("xdc")}
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match=says):
        learning_bench.merge([parts["xdc"], tmp_path / "other.json"])


@pytest.mark.integration
def test_finetuning_reads_the_encoders_of_every_part(merged, tmp_path):
    out = tmp_path / "finetune.json"
    done = bench("--learning", str(merged), "--methods", "xdc", "sdc", "--per-class", "2", "--epoch-size", "16",
                 "--out", str(out), script="finetune_bench.py")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert list(result["table"]) == ["scratch", "xdc", "sdc"]
    assert result["labelled_videos"] == 2 * 2 and result["seeds"] == [0]
    for method in ("xdc", "sdc"):
        for m in ("video", "audio"):
            [run] = result["runs"][method][m]
            assert len(run["correct"]) == result["test_videos"]
            d = result["table"][method][m]["delta_vs_scratch"]
            assert d["ci95"][0] <= d["delta"] <= d["ci95"][1]


def replaced_encoder(result: dict) -> None:
    result["runs"]["xdc"][0]["encoders"]["video"]["sha256"] = "0" * 64


@pytest.mark.integration
@pytest.mark.parametrize("args, change, says", [
    (["--per-class", "1000"], None, "training videos; ask for at most"),
    (["--methods", "cdc"], None, "ran no cdc (it ran xdc, sdc): rerun bench/learning_bench.py with --methods cdc"),
    ([], replaced_encoder, "is not the video encoder"),
])
def test_finetuning_says_what_is_missing(merged, tmp_path, args, change, says):
    learning = merged
    if change:
        result = json.loads(merged.read_text())
        change(result)
        learning = tmp_path / "learning.json"
        learning.write_text(json.dumps(result))
    done = bench("--learning", str(learning), *args, "--out", str(tmp_path / "f.json"), script="finetune_bench.py")
    assert done.returncode != 0 and says in done.stderr, done.stderr[-3000:]
    assert not (tmp_path / "f.json").exists()
