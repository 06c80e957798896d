"""Encoders: full-size parameter counts, torchvision compatibility, slim variants."""

import torch
import torchvision

from xdc_core.models import AudioTrunk, VideoTrunk, audio_input, build_trunk, count_parameters, video_input


def test_full_size_parameter_counts():
    assert abs(count_parameters(VideoTrunk(64)) - 31.30e6) < 0.05e6  # r2plus1d_18 trunk
    assert abs(count_parameters(AudioTrunk(64)) - 11.17e6) < 0.05e6  # 1-channel resnet18 trunk


def test_full_size_checkpoints_load_into_torchvision_architectures():
    video = torchvision.models.video.r2plus1d_18()
    video.fc = torch.nn.Identity()
    video.load_state_dict(VideoTrunk(64).state_dict(), strict=True)
    audio = torchvision.models.resnet18()
    audio.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    audio.fc = torch.nn.Identity()
    audio.load_state_dict(AudioTrunk(64).state_dict(), strict=True)


def test_slim_variants_keep_structure_and_output_8x_width():
    v, a = build_trunk("video", 4), build_trunk("audio", 4)
    assert set(v.state_dict()) == set(VideoTrunk(64).state_dict())
    clips = torch.randint(0, 255, (2, 3, 4, 32, 32), dtype=torch.uint8)
    assert v.eval()(video_input(clips)).shape == (2, 32)
    assert a.eval()(audio_input(torch.randn(2, 1, 16, 20))).shape == (2, 32)


def test_audio_input_is_standardised_per_example():
    x = audio_input(torch.randn(3, 1, 8, 10) * 5 + 7)
    assert torch.allclose(x.mean(dim=(1, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(x.std(dim=(1, 2, 3)), torch.ones(3), atol=1e-4)
