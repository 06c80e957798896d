"""Encoders: full-size parameter counts, torchvision compatibility, slim variants, the VMZ variant."""

import pytest
import torch
import torchvision

from xdc_core.config import VIDEO_ARCHS
from xdc_core.models import (
    VIDEO_TRUNKS,
    AudioTrunk,
    VideoTrunk,
    VmzVideoTrunk,
    audio_input,
    build_trunk,
    count_parameters,
    video_input,
)


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


# -- the VMZ R(2+1)D-18 of the released XDC models (model.video_arch: r2plus1d_18_vmz) ---------------

# Where VMZ's middle channels differ from torchvision's at width 64: the second (2+1)D conv of the
# first block of layers 2-4 (facebookresearch/VMZ issue #89); every other tensor has the same shape.
VMZ_ONLY = {"layer2.0.conv2.0": (230, 288), "layer3.0.conv2.0": (460, 576), "layer4.0.conv2.0": (921, 1152)}


def test_video_archs_of_the_config_are_the_trunks_built():
    assert tuple(VIDEO_TRUNKS) == VIDEO_ARCHS
    assert type(build_trunk("video", 4)) is VideoTrunk  # the default stays torchvision's
    assert type(build_trunk("video", 4, "r2plus1d_18_vmz")) is VmzVideoTrunk
    with pytest.raises(ValueError, match="r2plus1d_18_vmz"):
        build_trunk("video", 4, "r3d_18")


def test_vmz_trunk_differs_from_torchvision_only_in_three_middle_widths_and_bn_eps():
    tv, vmz = VideoTrunk(64).state_dict(), VmzVideoTrunk(64).state_dict()
    assert list(tv) == list(vmz)  # same keys, same order
    differ = {k for k in tv if tv[k].shape != vmz[k].shape}
    assert {k.rsplit(".", 2)[0] for k in differ} == set(VMZ_ONLY)
    for prefix, (tv_mid, vmz_mid) in VMZ_ONLY.items():
        planes = vmz[f"{prefix}.3.weight"].shape[0]
        assert tuple(tv[f"{prefix}.0.weight"].shape) == (tv_mid, planes, 1, 3, 3)
        assert tuple(vmz[f"{prefix}.0.weight"].shape) == (vmz_mid, planes, 1, 3, 3)
        assert tuple(vmz[f"{prefix}.3.weight"].shape) == (planes, vmz_mid, 3, 1, 1)
    eps = {m.eps for m in VmzVideoTrunk(4).modules() if isinstance(m, torch.nn.BatchNorm3d)}
    assert eps == {1e-3}
    assert abs(count_parameters(VmzVideoTrunk(64)) - 33.17e6) < 0.01e6


def test_slim_vmz_trunk_keeps_keys_and_outputs_8x_width():
    v = build_trunk("video", 8, "r2plus1d_18_vmz")
    assert list(v.state_dict()) == list(VmzVideoTrunk(64).state_dict())
    assert v.eval()(video_input(torch.randint(0, 255, (2, 3, 4, 32, 32), dtype=torch.uint8))).shape == (2, 64)


def test_steps_build_and_load_the_configured_video_arch(tmp_path):
    from xdc_core.config import build_config
    from xdc_core.errors import InputError
    from xdc_core.steps import init_encoder, load_encoder, save_encoder

    vmz = build_config({"model": {"video_arch": "r2plus1d_18_vmz", "video_width": 8, "audio_width": 4}})
    tv = build_config({"model": {"video_width": 8, "audio_width": 4}})
    assert type(init_encoder("video", vmz)) is VmzVideoTrunk and type(init_encoder("video", tv)) is VideoTrunk
    save_encoder(init_encoder("video", vmz), tmp_path / "v.pt")
    assert type(load_encoder("video", vmz, tmp_path / "v.pt")) is VmzVideoTrunk
    with pytest.raises(InputError, match=r"r2plus1d_18 \(model.video_arch\) of width 8"):
        load_encoder("video", tv, tmp_path / "v.pt")  # a VMZ checkpoint under the torchvision arch


def test_an_unknown_video_arch_is_a_config_error():
    from xdc_core.config import build_config
    from xdc_core.errors import ConfigError

    with pytest.raises(ConfigError, match="model.video_arch: .*'r2plus1d_18_vmz'"):
        build_config({"model": {"video_arch": "r3d_18"}})
