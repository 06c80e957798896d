import pytest

from xdc_cli.main import main
from xdc_core.config import ConfigError, DataConfig, build_config, load_config


def test_defaults_are_the_papers():
    d = DataConfig()
    assert (d.clip_frames, d.fps, d.short_side, d.crop_size) == (8, 30.0, 256, 224)
    assert (d.audio_rate, d.audio_seconds, d.n_mels, d.mel_frames, d.eval_clips) == (16000, 2.0, 40, 100, 10)
    assert d.audio_samples == 32000 and d.required_duration_s == 2.0


def test_out_of_range_value_names_field_and_range():
    with pytest.raises(ConfigError) as err:
        build_config({"data": {"clip_frames": 0}})
    msg = str(err.value)
    assert "data.clip_frames" in msg and "allowed range [1, 128]" in msg and "got 0" in msg


def test_unknown_setting_is_an_error_not_ignored():
    with pytest.raises(ConfigError, match=r"data\.clip_frame: unknown setting"):
        build_config({"data": {"clip_frame": 8}})


def test_crop_larger_than_scaled_frame_is_rejected():
    with pytest.raises(ConfigError, match=r"crop_size \(300\) must be <= short_side \(256\)"):
        build_config({"data": {"crop_size": 300}})


def test_yaml_file_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  short_side: 128\n  crop_size: 112\n")
    c = load_config(f, {"data.fps": 15})
    assert (c.data.short_side, c.data.crop_size, c.data.fps) == (128, 112, 15.0)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "bad.yaml")


def test_repo_presets_are_valid():
    from pathlib import Path

    for preset in sorted((Path(__file__).parents[1] / "xdc_core" / "presets").glob("*.yaml")):
        load_config(preset)


def test_cli_reports_bad_setting_with_exit_2(capsys):
    assert main(["config", "--set", "data.fps=500"]) == 2
    err = capsys.readouterr().err
    assert "data.fps" in err and "allowed range (0, 120]" in err
