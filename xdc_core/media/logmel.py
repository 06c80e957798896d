"""Log-mel spectrogram of an audio window: the audio encoder's input image ``[1, Q, P]``."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torchaudio


@lru_cache(maxsize=8)
def _mel_transform(rate: int, samples: int, n_mels: int, n_frames: int) -> torchaudio.transforms.MelSpectrogram:
    # Frame count: the hop is samples // P (2 s at 16 kHz, P=100: 320 samples = 20 ms) and each
    # window spans two hops (640 samples = 40 ms, 50% overlap). With centre padding the STFT
    # yields 1 + samples // hop = 101 frames; the last one is centred on the window's very end
    # and is mostly padding, so we keep the first P = 100.
    hop = samples // n_frames
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=rate,
        n_fft=2 * hop,
        win_length=2 * hop,
        hop_length=hop,
        n_mels=n_mels,
        center=True,
        power=2.0,
    )


def log_mel(samples: np.ndarray | torch.Tensor, rate: int, n_mels: int, n_frames: int) -> torch.Tensor:
    """``log(mel power + 1e-6)`` of a mono window, as float32 ``[1, n_mels, n_frames]``."""
    wave = torch.as_tensor(samples, dtype=torch.float32)
    transform = _mel_transform(rate, wave.shape[-1], n_mels, n_frames)
    power = transform.spectrogram(wave)[..., :n_frames]  # [F, P]
    # The mel projection is a matrix product, and MKL's float32 product rounds differently with
    # the number of threads (a DataLoader worker has one, the main process several): computed in
    # float64 and rounded once, the same window gives the same bits however it is read.
    mel = (transform.mel_scale.fb.double().T @ power.double()).float()
    return torch.log(mel + 1e-6).unsqueeze(0)
