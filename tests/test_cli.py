"""The `xdc` console script, through a real subprocess."""

import json
import shutil
import subprocess
import sys
from pathlib import Path


def xdc(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("xdc") or str(Path(sys.executable).parent / "xdc")
    return subprocess.run([exe, *args], capture_output=True, text=True)


def test_help_lists_every_command():
    out = xdc("--help")
    assert out.returncode == 0
    for command in ("run", "sample-data", "decode", "step", "dvc-yaml", "dataset", "checkpoint", "regress", "pipeline",
                    "probe",
                    "config"):
        assert f"    {command}" in out.stdout, command


def test_library_and_help_import_no_kubeflow_nor_dvc():
    """xdc_core never imports kfp or dvc; the CLI imports kfp only for `xdc pipeline` commands."""
    code = ("import sys, contextlib, io\n"
            "import xdc_core, xdc_core.run, xdc_core.steps, xdc_cli.main\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    xdc_cli.main.main(['--help'])\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    xdc_cli.main.main(['pipeline', 'compile', '--help'])\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'kfp', 'dvc', 'xdc_kfp.runner'}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_no_import_circle_among_the_packages():
    """xdc_core imports neither CLI nor Kubeflow code; xdc_kfp does not import the CLI."""
    root = Path(__file__).resolve().parents[1]
    for package, forbidden in (("xdc_core", ("xdc_cli", "xdc_kfp", "kfp", "dvc")), ("xdc_kfp", ("xdc_cli",))):
        for f in (root / package).rglob("*.py"):
            for line in f.read_text().splitlines():
                words = line.split()
                if words[:1] in (["import"], ["from"]) and len(words) > 1:
                    assert words[1].split(".")[0] not in forbidden, f"{f}: {line.strip()}"


def test_config_takes_a_preset_name_or_a_file(tmp_path):
    r = xdc("config", "--config", "cpu-demo", "--set", "cluster.k=7")
    assert r.returncode == 0 and "k: 7" in r.stdout and "video_width: 8" in r.stdout
    r = xdc("config", "--config", "no-such-preset")
    assert r.returncode == 2 and "neither a file nor a preset" in r.stderr


def test_config_may_be_an_object_in_the_store(bucket):
    # a PyTorchJob's pods get their settings this way (xdc_kfp/training_job.py): they share no disk
    from xdc_core import store

    store.write_bytes(f"s3://{bucket}/run/settings.yaml", b"cluster:\n  k: 11\n")
    r = xdc("config", "--config", f"s3://{bucket}/run/settings.yaml", "--set", "seed=3")
    assert r.returncode == 0 and "k: 11" in r.stdout and "seed: 3" in r.stdout, r.stderr
    r = xdc("config", "--config", f"s3://{bucket}/run/missing.yaml")
    assert r.returncode == 2 and "missing.yaml" in r.stderr


def test_sample_data_then_decode(tmp_path):
    r = xdc("sample-data", "--out", str(tmp_path / "s"), "--videos", "4", "--classes", "2")
    assert r.returncode == 0, r.stderr
    r = xdc("decode", "--manifest", str(tmp_path / "s" / "manifest.csv"), "--out", str(tmp_path / "d"), "--quiet",
            "--config", "cpu-demo")
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert (summary["accepted"], summary["quarantined"]) == (4, 0)
    assert summary["labels"] == ["c0", "c1"]


def test_probe_prints_streams_and_fails_on_bad_file(tmp_path):
    (tmp_path / "x.mp4").write_text("nope")
    r = xdc("probe", str(tmp_path / "x.mp4"))
    assert r.returncode == 1 and "x.mp4: cannot open as a media container" in r.stderr
