"""Reading one file: real clips with real-world quirks, and synthetic videos with known frames."""

import shutil

import numpy as np
import pytest
import torch
import torchaudio

from conftest import frame_indices, make_indexed_video
from xdc_core.media import MediaFile, probe
from xdc_core.media.errors import EmptyFile, FileMissing, NoAudioStream, Truncated, Unreadable
from xdc_core.media.logmel import log_mel


def test_multistream_picks_best_streams_and_gives_16k_mono(real_clips):
    with MediaFile(real_clips / "nasa_13013.mp4") as m:
        info = m.info
        assert (info.video_streams, info.audio_streams) == (2, 2)
        assert (info.video.index, info.video.width, info.video.height) == (3, 480, 270)
        assert (info.audio.index, info.audio.sample_rate, info.audio.channels) == (4, 16000, 2)
        clip = m.video_clip(5.0, 8, 30, 256, 224, "random", np.random.default_rng(0))
        audio = m.audio(5.0, 2.0, 16000)
    assert clip.shape == (3, 8, 224, 224) and clip.dtype == np.uint8
    assert audio.shape == (32000,) and audio.dtype == np.float32 and audio.std() > 0.01
    spec = log_mel(audio, 16000, 40, 100)
    assert spec.shape == (1, 40, 100) and spec.dtype == torch.float32 and torch.isfinite(spec).all()


def test_avi_with_mp3_44k_stereo_is_resampled(real_clips):
    with MediaFile(real_clips / "mm_test.avi") as m:
        assert (m.info.audio.codec, m.info.audio.sample_rate, m.info.audio.channels) == ("mp3float", 44100, 2)
        full = m.audio(0.0, None, 16000)
        window = m.audio(3.0, 2.0, 16000)
        clip = m.video_clip(1.0, 8, 30, 256, 224)
    assert abs(len(full) / 16000 - 6.557) < 0.05  # the whole track, now at 16 kHz
    assert window.shape == (32000,) and window.std() > 0.01
    # The same samples whether read as a window or sliced from the whole track.
    s = 3 * 16000
    assert np.corrcoef(window[1000:31000], full[s + 1000 : s + 31000])[0, 1] > 0.97  # MP3 re-primes after a seek
    assert clip.shape == (3, 8, 224, 224)


def test_video_without_audio_stream(real_clips):
    with MediaFile(real_clips / "mm_test.mp4") as m:
        assert m.info.audio is None
        assert m.video_clip(2.0, 8, 30, 256, 224).shape == (3, 8, 224, 224)  # usable for video-only evaluation
        with pytest.raises(NoAudioStream, match="mm_test.mp4: no audio stream"):
            m.audio(0.0, 2.0)


def test_short_hevc_video_repeats_last_frame(real_clips):
    # 1 s at 10 fps; a 16-frame clip at 10 fps needs 1.6 s: the last frame is repeated (short-video rule).
    with MediaFile(real_clips / "h265_video.mp4") as m:
        assert (m.info.video.codec, m.duration) == ("hevc", 1.0)
        clip = m.video_clip(0.0, 16, 10, 128, 128)
    assert clip.shape == (3, 16, 128, 128)
    assert all(np.array_equal(clip[:, 9], clip[:, i]) for i in range(10, 16))
    assert not np.array_equal(clip[:, 0], clip[:, 9])


def test_bad_files_raise_typed_errors_naming_the_file(tmp_path, real_clips):
    with pytest.raises(FileMissing, match=r"nope.mp4: file not found \(looked for /.*/nope.mp4\)"):
        MediaFile(tmp_path / "nope.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(EmptyFile, match=r"empty.mp4: empty file \(0 bytes\)"):
        MediaFile(tmp_path / "empty.mp4")
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 20)
    with pytest.raises(Unreadable, match="text.mp4: cannot open as a media container"):
        probe(tmp_path / "text.mp4")


def test_clip_frames_come_from_the_right_times(tmp_path):
    # 10 fps source with frame i at grey 8*i; read at 30 fps from 1.0 s: frames 10,10,11,11,11,12...
    path = make_indexed_video(tmp_path / "idx.mp4", frames=30, fps=10, audio_rate=None)
    with MediaFile(path) as m:
        got = frame_indices(m.video_clip(1.0, 6, 30, 32, 32))
        assert got == [10, 10, 11, 11, 11, 12]
        # Same-rate read after a seek into the middle of a GOP.
        assert frame_indices(m.video_clip(2.21, 4, 10, 32, 32)) == [22, 23, 24, 25]


def test_random_crop_moves_centre_crop_does_not(tmp_path):
    path = make_indexed_video(tmp_path / "v.mp4", frames=10, fps=10, size=(96, 32), audio_rate=None)
    with MediaFile(path) as m:
        rng = np.random.default_rng(1)
        # short side 32 -> frames stay 96x32; crop 32x32 anywhere along x
        a = m.video_clip(0.0, 2, 10, 32, 32, "center")
        b = m.video_clip(0.0, 2, 10, 32, 32, "center")
        assert np.array_equal(a, b)
        assert m.video_clip(0.0, 2, 10, 32, 32, "random", rng).shape == (3, 2, 32, 32)


def test_audio_window_is_aligned_with_the_video_clock(tmp_path):
    path = make_indexed_video(tmp_path / "a.mp4", frames=40, fps=10, audio_rate=16000, audio_onset=2.0)
    with MediaFile(path) as m:
        window = m.audio(1.5, 1.0, 16000)  # 1.5 s .. 2.5 s: silent half, then the tone
    energy = np.abs(window)
    assert energy[: 7000].max() < 0.05
    assert energy[9000:].mean() > 0.2


def test_truncated_copy_of_a_real_clip_is_detected(tmp_path, real_clips):
    from xdc_core.config import DataConfig, DecodeConfig
    from xdc_core.decode import decode_video
    from xdc_core.media.errors import MediaError

    data = tmp_path / "trunc.avi"
    blob = (real_clips / "mm_test.avi").read_bytes()
    data.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(Truncated, match=r"trunc.avi: truncated: video data ends at 3\.\d+ s of 6\.56 s declared"):
        decode_video(str(data), tmp_path / "o.mp4", tmp_path / "o.npy", DataConfig(short_side=64, crop_size=64), DecodeConfig())
    assert not list(tmp_path.glob("o*"))  # nothing half-written left behind
    # An mp4 cut short loses its index (moov atom at the end): it cannot be opened at all.
    cut = tmp_path / "cut.mp4"
    blob = (real_clips / "nasa_13013.mp4").read_bytes()
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(MediaError, match="cut.mp4"):
        decode_video(str(cut), tmp_path / "o.mp4", tmp_path / "o.npy", DataConfig(short_side=64, crop_size=64), DecodeConfig())


def test_real_clips_folder_is_read_only_safe(tmp_path, real_clips):
    # Reading never writes next to the source (CI mounts shared/ read-only).
    copy = tmp_path / "nasa.mp4"
    shutil.copy(real_clips / "nasa_13013.mp4", copy)
    before = sorted(p.name for p in tmp_path.iterdir())
    with MediaFile(copy) as m:
        m.video_clip(1.0, 8, 30, 64, 64)
        m.audio(1.0, 2.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("seconds, n_mels, frames", [(1.0, 16, 20), (2.0, 40, 100), (3.0, 80, 20)])
def test_log_mel_is_the_same_bits_whatever_the_thread_count(seconds, n_mels, frames):
    # A DataLoader worker computes with one thread and the main process with several; on MKL's
    # AVX-512 path a float32 mel projection rounded differently with each (1 s, 16 mels did).
    wave = np.random.default_rng(0).standard_normal(round(seconds * 16000)).astype(np.float32)
    threads = torch.get_num_threads()
    try:
        spectra = []
        for n in (1, 2, 4):
            torch.set_num_threads(n)
            spectra.append(log_mel(wave, 16000, n_mels, frames))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(spectra[0], s) for s in spectra[1:])
    reference = torchaudio.transforms.MelSpectrogram(
        16000, n_fft=2 * (len(wave) // frames), hop_length=len(wave) // frames, n_mels=n_mels, power=2.0
    )(torch.from_numpy(wave))[..., :frames]
    assert torch.allclose(spectra[0], torch.log(reference + 1e-6).unsqueeze(0), atol=1e-4)
