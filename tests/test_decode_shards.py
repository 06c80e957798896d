"""Sharded decode: shards of a manifest, decoded apart and merged, make the unsharded decode's dataset.

Real decodes of small media, good and bad (corrupt, missing, silent, too short: the quarantine
merges too), first through the library, then through kfp.local with the pipelines' own fan-out.
"""

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from conftest import TINY_SETTINGS, make_indexed_video
from kfp import dsl, local

from xdc_core.config import build_config
from xdc_core.decode import DatasetMismatch, decode_dataset
from xdc_core.decode_shards import (
    decode_shard,
    merge_shards,
    merge_step,
    plan_shards,
    shard_rows,
    shared_sample_manifest,
)
from xdc_core.errors import ConfigError, RunError
from xdc_core.manifest import read_manifest
from xdc_core.sample_data import SampleSpec
from xdc_core.steps import decode_step
from xdc_kfp.components import build_components
from xdc_kfp.pipelines.decode_fanout import build_decode_pipeline
from xdc_kfp.placement import Placement

CFG = build_config(TINY_SETTINGS)
COUNTS = ("total", "accepted", "quarantined", "accepted_duration_s", "reasons", "labels")


@pytest.fixture(scope="module")
def mixed_manifest(tiny_sample, tmp_path_factory) -> Path:
    """The 16 tiny sample videos (absolute paths) and 4 bad files (paths relative to the manifest),
    interleaved so that every shard gets some of each. The bad ones are the only "holdout" split."""
    root = tmp_path_factory.mktemp("mixed")
    (root / "bad").mkdir()
    (root / "bad" / "corrupt.mp4").write_bytes(os.urandom(4096))
    make_indexed_video(root / "bad" / "silent.mp4", frames=75, fps=30, audio_rate=None)
    make_indexed_video(root / "bad" / "short.mp4", frames=6, fps=30)
    bad = [("bad/corrupt.mp4", "c0"), ("bad/missing.mp4", "c1"), ("bad/silent.mp4", "c0"), ("bad/short.mp4", "c1")]
    good = [(r.resolved, r.label, r.split) for r in read_manifest(tiny_sample)]
    lines = [f"{p},{label},{split}" for p, label, split in good]
    for i, (p, label) in enumerate(bad):
        lines.insert(1 + 5 * i, f"{p},{label},holdout")
    manifest = root / "manifest.csv"
    manifest.write_text("path,label,split\n" + "\n".join(lines) + "\n")
    return manifest


@pytest.fixture(scope="module")
def unsharded(mixed_manifest, tmp_path_factory) -> Path:
    """The unsharded decode of the mixed manifest: what every sharded decode must reproduce."""
    out = tmp_path_factory.mktemp("unsharded") / "decoded"
    decode_dataset(mixed_manifest, out, CFG, progress=False)
    return out


@pytest.fixture(scope="module")
def shards3(mixed_manifest, tmp_path_factory) -> list[Path]:
    """The mixed manifest decoded in 3 shards."""
    root = tmp_path_factory.mktemp("shards")
    dirs = [root / f"shard{s}" for s in range(3)]
    for s, d in enumerate(dirs):
        decode_shard(mixed_manifest, s, 3, d, CFG, progress=False)
    return dirs


def assert_same_dataset(ours: Path, theirs: Path) -> None:
    """Same index and quarantine, byte for byte; same counts; same decoded files."""
    for name in ("index.csv", "quarantine.csv", "meta.json"):
        assert (ours / name).read_bytes() == (theirs / name).read_bytes(), name
    a, b = (json.loads((d / "summary.json").read_text()) for d in (ours, theirs))
    assert {k: a[k] for k in COUNTS} == {k: b[k] for k in COUNTS}
    for sub in ("video", "audio"):
        names = sorted(p.name for p in (theirs / sub).iterdir())
        assert sorted(p.name for p in (ours / sub).iterdir()) == names and names
        assert all((ours / sub / n).read_bytes() == (theirs / sub / n).read_bytes() for n in names)


def test_shard_rows_partition_the_rows_evenly():
    for n in range(8):
        rows = list(range(n))
        for shards in range(1, 6):
            parts = [shard_rows(rows, s, shards) for s in range(shards)]
            assert sorted(r for p in parts for r in p) == rows  # every row in exactly one shard
            assert all(p == sorted(p) for p in parts)  # manifest order within a shard
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
            assert [bool(p) for p in parts] == [s < n for s in range(shards)]
    assert shard_rows(list("abcdefg"), 1, 3) == ["b", "e"]
    with pytest.raises(ConfigError, match=r"shard must be between 0 and 2 for 3 shards \(got 3\)"):
        shard_rows([1, 2], 3, 3)
    with pytest.raises(ConfigError, match=r"decode shards must be at least 1 \(got 0\)"):
        shard_rows([1, 2], 0, 0)


def test_merged_shards_equal_the_unsharded_decode(mixed_manifest, unsharded, shards3, tmp_path):
    rows = read_manifest(mixed_manifest)
    summary = merge_shards(shards3, rows, tmp_path / "merged")
    merged = tmp_path / "merged"
    assert_same_dataset(merged, unsharded)
    assert (summary["total"], summary["accepted"], summary["quarantined"]) == (20, 16, 4)
    assert summary["reasons"] == json.loads((unsharded / "summary.json").read_text())["reasons"]
    assert len(summary["reasons"]) >= 3  # corrupt, missing, silent and short are told apart
    assert summary["decoded_now"] == 20 and [s["total"] for s in summary["shards"]] == [7, 7, 6]
    # the shards' files are linked, not copied (same filesystem), and stay in the shards
    some = next((merged / "video").iterdir())
    owners = [d for d in shards3 if (d / "video" / some.name).is_file()]
    assert len(owners) == 1 and some.samefile(owners[0] / "video" / some.name)
    # the merged journal is a valid one: decoding the merged folder again redoes only the missing file
    again = decode_dataset(mixed_manifest, merged, CFG, progress=False)
    assert (again["decoded_now"], again["resumed"]) == (1, 19)
    assert (merged / "index.csv").read_bytes() == (unsharded / "index.csv").read_bytes()


def test_merge_names_the_shard_at_fault(mixed_manifest, shards3, tmp_path):
    rows = read_manifest(mixed_manifest)
    other = tmp_path / "other"
    shutil.copytree(shards3[1], other)
    meta = json.loads((other / "meta.json").read_text())
    (other / "meta.json").write_text(json.dumps(meta | {"crf": meta["crf"] + 1}))
    with pytest.raises(DatasetMismatch, match=rf"shard {other} was decoded with other settings .*crf: "):
        merge_shards([shards3[0], other, shards3[2]], rows, tmp_path / "a")
    with pytest.raises(DatasetMismatch, match=r"6 of 20 videos are in no shard, e\.g\. "):
        merge_shards(shards3[:2], rows, tmp_path / "b")
    with pytest.raises(DatasetMismatch, match=rf"shard {shards3[0]} and shard {shards3[0]} both decoded"):
        merge_shards([shards3[0], *shards3], rows, tmp_path / "c")
    accepted = json.loads((other / "summary.json").read_text())["accepted"]
    assert accepted > 0
    (other / "meta.json").write_text(json.dumps(meta))
    victim = next((other / "audio").iterdir())
    victim.unlink()
    with pytest.raises(DatasetMismatch, match=rf"shard {other} lacks audio/{victim.name}"):
        merge_shards([shards3[0], other, shards3[2]], rows, tmp_path / "d")


def test_the_plan_is_checked_on_the_whole_manifest_and_on_the_merged_dataset(mixed_manifest, shards3, tmp_path):
    assert plan_shards(mixed_manifest, 3, CFG, evaluate=True) == [0, 1, 2]
    assert plan_shards(mixed_manifest, 50, CFG, evaluate=True) == list(range(20))  # no empty shard
    # k larger than the pretraining videos: the same message as the unsharded decode's, before any decode
    big_k = build_config(TINY_SETTINGS | {"cluster": {"k": 200}})
    with pytest.raises(RunError) as sharded:
        plan_shards(mixed_manifest, 3, big_k, evaluate=False)
    with pytest.raises(RunError) as unsharded:
        decode_step(mixed_manifest, tmp_path / "never", big_k, evaluate=False, progress=False)
    assert str(sharded.value) == str(unsharded.value) and "k=200 (cluster.k)" in str(sharded.value)
    assert not (tmp_path / "never").exists()
    # the holdout split has labelled videos in the manifest, but all of them are quarantined
    holdout = build_config(TINY_SETTINGS | {"evaluate": TINY_SETTINGS["evaluate"] | {"test_split": "holdout"}})
    assert plan_shards(mixed_manifest, 3, holdout, evaluate=True) == [0, 1, 2]
    with pytest.raises(RunError, match=r"test split 'holdout' .* but .*merged \(after decoding\) has none"):
        merge_step(shards3, mixed_manifest, tmp_path / "merged", holdout, evaluate=True)
    with pytest.raises(ConfigError, match=r"decode shards must be at least 1 \(got 0\)"):
        plan_shards(mixed_manifest, 0, CFG, evaluate=True)


def test_tasks_racing_for_the_sample_data_share_one_copy(tmp_path):
    spec = SampleSpec(videos=2, classes=2, seconds=0.5, width=32, height=32)
    found: list[Path] = []
    threads = [threading.Thread(target=lambda: found.append(shared_sample_manifest(tmp_path, spec))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(found) == 3 and len(set(found)) == 1
    rows = read_manifest(found[0])
    assert sorted(r.label for r in rows) == ["c0", "c1"] and all(Path(r.resolved).is_file() for r in rows)
    assert os.listdir(tmp_path) == [found[0].parent.name]  # the losers' temporary folders are gone


@pytest.mark.integration  # kfp.local
def test_sharded_decode_through_kfp_local_equals_the_unsharded_decode(mixed_manifest, unsharded, tmp_path):
    """The pipelines' own fan-out (plan → ParallelFor of decode tasks → merge) with 3 shards and
    with 1 gives the unsharded decode's dataset."""
    c = build_components()
    decode = build_decode_pipeline(c, Placement(retries=0).resolved(build_config(TINY_SETTINGS)))  # fails at once

    @dsl.pipeline(name="shards")
    def sharded(data_uri: str, decode_shards: int) -> None:
        # the settings from a task, as in the real pipelines (kfp.local mishandles task outputs
        # read inside a loop: pipelines/decode_fanout.py)
        given = {"method": "xdc", "k": 3, "epochs": 2, "epoch_size": 0, "lr": 0.05, "batch_size": 8, "seed": 0}
        settings = c.settings(config=json.dumps(TINY_SETTINGS), overrides="", data_uri=data_uri, **given)
        decode(data_uri=data_uri, settings=settings.output, run_evaluation=True, shards=decode_shards)

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    for shards in (3, 1):
        sharded(data_uri=str(mixed_manifest), decode_shards=shards)
    merged = sorted((tmp_path / "root").glob("shards-*/merge-decoded/decoded"),
                    key=lambda p: p.stat().st_mtime)
    assert len(merged) == 2
    for out in merged:
        assert_same_dataset(out, unsharded)
    summaries = [json.loads((out / "summary.json").read_text()) for out in merged]
    assert [len(s["shards"]) for s in summaries] == [3, 1]



def test_shards_of_a_manifest_in_the_object_store_merge_to_its_unsharded_decode(tiny_sample, bucket, tmp_path):
    """A manifest in the store lists its videos relative to its folder: each shard fetches its
    own videos from the bucket, and the merge equals the unsharded decode."""
    from xdc_core import store

    good = read_manifest(tiny_sample)[:4]
    for r in good:
        store.upload_file(r.resolved, f"s3://{bucket}/raw/{r.path}")
    store.write_bytes(f"s3://{bucket}/raw/bad/corrupt.mp4", os.urandom(4096))
    lines = [f"{r.path},{r.label},{r.split}" for r in good] + ["bad/corrupt.mp4,c0,train", "bad/missing.mp4,c1,train"]
    manifest = f"s3://{bucket}/raw/manifest.csv"
    store.write_bytes(manifest, ("path,label,split\n" + "\n".join(lines) + "\n").encode())
    rows = read_manifest(manifest)
    assert all(r.resolved.startswith(f"s3://{bucket}/raw/") for r in rows)
    decode_dataset(manifest, tmp_path / "unsharded", CFG, progress=False)
    shards = [tmp_path / f"shard{s}" for s in range(2)]
    for s, d in enumerate(shards):
        decode_shard(manifest, s, 2, d, CFG, progress=False)
    summary = merge_shards(shards, rows, tmp_path / "merged")
    assert_same_dataset(tmp_path / "merged", tmp_path / "unsharded")
    assert (summary["accepted"], summary["quarantined"]) == (4, 2)
