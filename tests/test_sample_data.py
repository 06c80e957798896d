"""The embedded sample dataset: deterministic, balanced, decodable."""

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from xdc_core.media import MediaFile
from xdc_core.sample_data import SampleSpec, make_sample_dataset

SMALL = dict(videos=6, classes=3, seconds=2.5, width=64, height=48)


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((folder / "videos").iterdir())}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    make_sample_dataset(tmp_path / "a", SampleSpec(seed=7, **SMALL))
    make_sample_dataset(tmp_path / "b", SampleSpec(seed=7, **SMALL))
    make_sample_dataset(tmp_path / "c", SampleSpec(seed=8, **SMALL))
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert (tmp_path / "a" / "manifest.csv").read_text() == (tmp_path / "b" / "manifest.csv").read_text()
    assert set(digest(tmp_path / "a").values()).isdisjoint(digest(tmp_path / "c").values())


def test_manifest_is_balanced_and_files_are_h264_aac(tmp_path):
    manifest = make_sample_dataset(tmp_path, SampleSpec(seed=0, **SMALL))
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and sorted(r["label"] for r in rows) == ["c0", "c0", "c1", "c1", "c2", "c2"]
    classes = json.loads((tmp_path / "classes.json").read_text())
    assert [c["label"] for c in classes] == ["c0", "c1", "c2"]
    with MediaFile(tmp_path / rows[0]["path"]) as m:
        assert (m.info.video.codec, m.info.audio.codec) == ("h264", "aac")
        assert m.duration == pytest.approx(2.5, abs=0.05)


def test_bad_spec_is_rejected():
    with pytest.raises(ValueError, match="--classes"):
        SampleSpec(classes=20)
    with pytest.raises(ValueError, match="--videos"):
        SampleSpec(videos=2, classes=4)


def test_calibration_random_init_clusters_carry_a_little_of_the_class(tmp_path):
    """The property XDC needs from the data before any method is compared (the learning benchmark
    checks it at full size): random-init features of each modality cluster a little by class,
    more than chance. 400 videos, the CPU preset's sizes."""
    import numpy as np

    from xdc_core.config import load_config
    from xdc_core.decode import decode_dataset
    from xdc_core.kmeans import kmeans, nmi_with_chance
    from xdc_core.steps import embed_step

    preset = Path(__file__).parents[1] / "xdc_core" / "presets" / "cpu-demo.yaml"
    cfg = load_config(preset, {"data.clip_cache": 0, "embed.workers": 0})
    manifest = make_sample_dataset(tmp_path / "sample", SampleSpec(videos=400))
    decode_dataset(manifest, tmp_path / "decoded", cfg, progress=False)
    for m in ("video", "audio"):
        f = np.load(embed_step(tmp_path / "decoded", m, cfg, None, tmp_path / f"{m}.npz", progress=False))
        assign = kmeans(f["features"], cfg.cluster.k, seed=0, use_gpu=False).assignments
        score = nmi_with_chance(assign, f["labels"], seed=0)
        assert score["nmi"] > 1.5 * score["nmi_chance"], (m, score)


# -- the family: other kinds, and the knobs ---------------------------------------------------------

from xdc_core.sample_data import KINDS, _frames, _sound  # noqa: E402


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_writes_deterministic_decodable_videos(tmp_path, kind):
    spec = SampleSpec(seed=3, kind=kind, videos=4, classes=2, seconds=1.0)
    make_sample_dataset(tmp_path / "a", spec)
    make_sample_dataset(tmp_path / "b", spec)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    classes = json.loads((tmp_path / "a" / "classes.json").read_text())
    assert len(classes) == 2 and classes[0] != classes[1]
    with MediaFile(tmp_path / "a" / "videos" / "sample_0000.mp4") as m:
        assert (m.info.video.codec, m.info.audio.codec) == ("h264", "aac")


@pytest.mark.parametrize("kind", KINDS)
def test_the_signal_knobs_remove_the_class_and_nothing_else(kind):
    """With the class's signal at 0, two classes drawn with the same random numbers give the same
    picture and sound (nothing of the class is left); at 1 they differ. Classes 1 and 2: the
    shapes kind draws one more number for classes with a rhythm (class 0 has none)."""
    def draw(c, **knobs):
        spec = SampleSpec(kind=kind, classes=4, seconds=0.5, **knobs)
        return (_frames(c, spec, np.random.default_rng([9, c % 1])), _sound(c, spec, np.random.default_rng([9, 1])))

    (f1, s1), (f2, s2) = draw(1), draw(2)
    assert not np.array_equal(f1, f2) and not np.array_equal(s1, s2)
    (f1, s1), (f2, s2) = draw(1, video_signal=0.0, audio_signal=0.0), draw(2, video_signal=0.0, audio_signal=0.0)
    assert np.array_equal(f1, f2) and np.array_equal(s1, s2)


def test_nuisance_knob_scales_the_nuisances():
    """At 0 the background is one colour without texture or sensor noise, and the sound has no
    distractors, hum or noise; at 1 they are there."""
    rng = lambda: np.random.default_rng([5, 1])  # noqa: E731
    plain = _frames(1, SampleSpec(nuisance=0.0, seconds=0.2), rng())
    busy = _frames(1, SampleSpec(nuisance=1.0, seconds=0.2), rng())
    corner = (slice(None), slice(0, 6), slice(0, 6))  # the object never reaches the corner
    assert plain[corner].std() < 1.0 < busy[corner].std()
    # Without the class's tone the sound is nuisances only: silence at 0.
    assert not _sound(1, SampleSpec(nuisance=0.0, audio_signal=0.0, seconds=0.5), rng()).any()
    assert _sound(1, SampleSpec(nuisance=1.0, audio_signal=0.0, seconds=0.5), rng()).any()
