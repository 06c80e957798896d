"""`xdc checkpoint import`: a released XDC video model → our encoder format, checked against the
official module definition."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_cli import xdc
from torch import nn
from torchvision.models.video.resnet import BasicBlock, R2Plus1dStem, VideoResNet

from xdc_core import store
from xdc_core.checkpoint import load_released, mismatch, read_state_dict
from xdc_core.config import build_config
from xdc_core.errors import InputError
from xdc_core.models import VideoTrunk, VmzVideoTrunk, count_parameters
from xdc_core.steps import load_encoder

# The name the released files have (github.com/HumamAlwassel/XDC, xdc.py model_urls).
RELEASED_NAME = "r2plus1d_18_xdc_ig65m_kinetics-f24f6ffb.pth"


# -- the official definition, transcribed ------------------------------------------------------------
# The released models' R(2+1)D-18: torchvision's VideoResNet (xdc.py builds it with **kwargs such as
# num_classes, and its fc is 512 x num_classes) with VMZ's Conv2Plus1D, whose middle channels come
# from each conv's own planes, and Caffe2's BatchNorm settings (facebookresearch/VMZ,
# pt/vmz/models/utils.py: Conv2Plus1D, _generic_resnet). Written out here, not imported from
# xdc_core, so that the import is checked against an independent definition.


class OfficialConv2Plus1D(nn.Sequential):
    def __init__(self, in_planes: int, out_planes: int, midplanes: int, stride: int = 1, padding: int = 1) -> None:
        midplanes = (in_planes * out_planes * 3 * 3 * 3) // (in_planes * 3 * 3 + 3 * out_planes)
        super().__init__(
            nn.Conv3d(in_planes, midplanes, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                      padding=(0, padding, padding), bias=False),
            nn.BatchNorm3d(midplanes),
            nn.ReLU(inplace=True),
            nn.Conv3d(midplanes, out_planes, kernel_size=(3, 1, 1), stride=(stride, 1, 1),
                      padding=(padding, 0, 0), bias=False),
        )

    @staticmethod
    def get_downsample_stride(stride: int) -> tuple[int, int, int]:
        return stride, stride, stride


def official_r2plus1d_18(num_classes: int = 400) -> VideoResNet:
    model = VideoResNet(block=BasicBlock, conv_makers=[OfficialConv2Plus1D] * 4, layers=[2, 2, 2, 2],
                        stem=R2Plus1dStem, num_classes=num_classes)
    for m in model.modules():  # "We need exact Caffe2 momentum for BatchNorm scaling"
        if isinstance(m, nn.BatchNorm3d):
            m.eps = 1e-3
            m.momentum = 0.9
    return model


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> tuple[nn.Module, Path]:
    """The official module with random weights *and* BatchNorm statistics (so eps and every
    tensor's place matter), in eval mode, and its state dict saved as the released files are."""
    torch.manual_seed(0)
    model = official_r2plus1d_18()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.002, 0.02)  # small: eps 1e-3 vs 1e-5 changes the output
    path = tmp_path_factory.mktemp("released") / RELEASED_NAME
    torch.save(model.state_dict(), path)  # a plain state dict, fc included
    return model.eval(), path


def features(model: nn.Module) -> torch.Tensor:
    """The 512-d features of one small clip (the fc of the official module bypassed)."""
    torch.manual_seed(1)
    x = torch.randn(1, 3, 4, 32, 32)
    fc, model.fc = model.fc, nn.Identity()
    try:
        with torch.no_grad():
            return model.eval()(x)
    finally:
        model.fc = fc


def test_official_definition_has_the_released_channel_numbers():
    """The Caffe2 R(2+1)D-18 shapes (VMZ issue #89): 288/576/1152 middle channels in the second
    conv of the first block of layers 2-4, where torchvision has 230/460/921."""
    state = official_r2plus1d_18().state_dict()
    expected = {"stem.0.weight": (45, 3, 1, 7, 7), "layer1.0.conv1.0.0.weight": (144, 64, 1, 3, 3),
                "layer2.0.conv1.0.0.weight": (230, 64, 1, 3, 3), "layer2.0.conv2.0.0.weight": (288, 128, 1, 3, 3),
                "layer3.0.conv1.0.0.weight": (460, 128, 1, 3, 3), "layer3.0.conv2.0.0.weight": (576, 256, 1, 3, 3),
                "layer4.0.conv1.0.0.weight": (921, 256, 1, 3, 3), "layer4.0.conv2.0.0.weight": (1152, 512, 1, 3, 3),
                "layer4.1.conv2.0.3.weight": (512, 1152, 3, 1, 1), "fc.weight": (400, 512)}
    assert {k: tuple(state[k].shape) for k in expected} == expected


def test_vmz_trunk_is_the_official_module_without_its_fc():
    official, ours = official_r2plus1d_18(), VmzVideoTrunk(64)
    trunk = {k: v for k, v in official.state_dict().items() if not k.startswith("fc.")}
    assert mismatch(trunk, ours.state_dict()) is None
    assert list(trunk) == list(ours.state_dict())
    assert count_parameters(ours) == count_parameters(official) - (512 * 400 + 400) == 33_165_639
    assert {m.eps for m in ours.modules() if isinstance(m, nn.BatchNorm3d)} == {1e-3}


@pytest.mark.integration
def test_import_then_load_encoder_gives_the_official_features(official, tmp_path):
    model, released = official
    out = tmp_path / "encoders" / "video_encoder.pt"
    r = xdc("checkpoint", "import", str(released), "--arch", "r2plus1d_18_vmz", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "dropped: fc.weight, fc.bias" in r.stdout and "--set model.video_arch=r2plus1d_18_vmz" in r.stdout

    saved = torch.load(out, map_location="cpu", weights_only=True)
    assert not any(k.startswith("fc.") for k in saved) and len(saved) == len(VmzVideoTrunk(4).state_dict())
    cfg = build_config({"model": {"video_arch": "r2plus1d_18_vmz", "video_width": 64}})
    trunk = load_encoder("video", cfg, out)
    ours, theirs = features(trunk), features(model)
    assert ours.shape == (1, 512)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.integration
def test_import_of_our_torchvision_trunk_names_the_key_and_the_arch_it_matches(tmp_path):
    path = tmp_path / "torchvision_trunk.pt"
    torch.save(VideoTrunk(64).state_dict(), path)
    r = xdc("checkpoint", "import", str(path), "--arch", "r2plus1d_18_vmz", "--out", str(tmp_path / "o.pt"))
    assert r.returncode == 2
    assert (f"{path} is not a r2plus1d_18_vmz video encoder of width 64: 'layer2.0.conv2.0.0.weight' has shape "
            "[230, 128, 1, 3, 3] where [288, 128, 1, 3, 3] is expected; it matches --arch r2plus1d_18") in r.stderr
    assert not (tmp_path / "o.pt").exists()


def test_truncated_file_is_named(official, tmp_path):
    path = tmp_path / RELEASED_NAME
    path.write_bytes(official[1].read_bytes()[:4096])
    with pytest.raises(InputError, match=f"{path} is not a PyTorch checkpoint"):
        read_state_dict(path)
    with pytest.raises(InputError, match="does not exist"):
        read_state_dict(tmp_path / "nothing.pth")


def test_a_wrapped_state_dict_names_the_wrapper_key(tmp_path):
    """The official files are plain state dicts (xdc.py loads them as they are): nothing is unwrapped."""
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {"stem.0.weight": torch.zeros(1)}, "epoch": torch.tensor(3)}, path)
    with pytest.raises(InputError, match="key 'state_dict' holds a dict, not a tensor"):
        read_state_dict(path)


def test_missing_and_unexpected_keys_are_named_first_and_counted():
    expected = {"a.weight": torch.zeros(2), "bn.num_batches_tracked": torch.tensor(0), "b.weight": torch.zeros(3)}
    assert mismatch({"a.weight": torch.ones(2), "b.weight": torch.ones(3)}, expected) is None  # counter optional
    assert mismatch({"a.weight": torch.ones(2)}, expected) == "missing key 'b.weight' (1 missing, 0 unexpected)"
    extra = {"a.weight": torch.ones(2), "b.weight": torch.ones(3), "module.c": torch.ones(1)}
    assert mismatch(extra, expected) == "unexpected key 'module.c' (0 missing, 1 unexpected)"


def test_released_file_without_counters_loads_strictly(official, tmp_path):
    """A state dict without BatchNorm counters (older PyTorch) still loads, every weight in place."""
    state = {k: v for k, v in torch.load(official[1], weights_only=True).items()
             if not k.endswith("num_batches_tracked")}
    path = tmp_path / "no_counters.pth"
    torch.save(state, path)
    trunk, dropped = load_released(path, "r2plus1d_18_vmz")
    assert dropped == ("fc.weight", "fc.bias")
    torch.testing.assert_close(trunk.state_dict()["layer4.0.conv2.0.0.weight"], state["layer4.0.conv2.0.0.weight"])


def test_import_reads_and_writes_object_store_uris(official, bucket: str, tmp_path):
    store.upload_file(official[1], f"s3://{bucket}/released/{RELEASED_NAME}")
    out = f"s3://{bucket}/encoders/video_encoder.pt"
    r = xdc("checkpoint", "import", f"s3://{bucket}/released/{RELEASED_NAME}", "--arch", "r2plus1d_18_vmz",
            "--out", out)
    assert r.returncode == 0, r.stderr
    store.download_file(out, tmp_path / "v.pt")
    cfg = build_config({"model": {"video_arch": "r2plus1d_18_vmz", "video_width": 64}})
    torch.testing.assert_close(features(load_encoder("video", cfg, tmp_path / "v.pt")), features(official[0]),
                               rtol=1e-5, atol=1e-6)

    store.upload_file(tmp_path / "v.pt", f"s3://{bucket}/bad.pth")  # a trunk: fine; now a wrong arch
    r = xdc("checkpoint", "import", f"s3://{bucket}/bad.pth", "--arch", "r2plus1d_18", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and f"s3://{bucket}/bad.pth is not a r2plus1d_18 video encoder" in r.stderr
