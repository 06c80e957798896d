"""The two encoders of the paper (§4.1), built from torchvision's own blocks.

* video: R(2+1)D-18 trunk, 512-d, in one of two variants (``model.video_arch``):
  ``r2plus1d_18``, torchvision's ``r2plus1d_18`` without its fc (:class:`VideoTrunk`), or
  ``r2plus1d_18_vmz``, the Caffe2/VMZ R(2+1)D-18 of the released XDC models (:class:`VmzVideoTrunk`);
* audio: ResNet-18 trunk (``torchvision.models.resnet18`` without its fc) whose first conv takes
  the 1-channel log-mel image, 512-d.

``width`` is the number of channels of the first stage (64 in torchvision; the stages have
width, 2·width, 4·width, 8·width channels). At ``width=64`` the ``r2plus1d_18`` and audio state dicts
are exactly torchvision's (minus ``fc``), so a checkpoint loads into ``r2plus1d_18()`` / an adapted
``resnet18()``; slim widths keep the same structure and keys for fast CPU runs and tests. The
VMZ variant at ``width=64`` has the key names and shapes of the released XDC video models, so
their state dicts load strictly (``xdc checkpoint import``, :mod:`xdc_core.checkpoint`).

Inputs are normalised here (:func:`video_input`, :func:`audio_input`) rather than inside the
modules, so the trunks stay plain torchvision architectures.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.models.video import resnet as tv_video

from .config import VIDEO_ARCHS


# Kinetics-400 RGB statistics, as torchvision's video models use.
VIDEO_MEAN = (0.43216, 0.394666, 0.37645)
VIDEO_STD = (0.22803, 0.22145, 0.216989)


def _torchvision_init(model: nn.Module) -> None:
    """The initialisation torchvision's ResNets use: Kaiming (fan-out) convs, identity BNs."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


class VideoTrunk(tv_video.VideoResNet):
    """R(2+1)D-18 without the classifier: ``[B, 3, L, H, W]`` float → ``[B, 8·width]``."""

    # What the VMZ variant changes; everything else (keys, strides, init) is shared.
    conv_builder: type[tv_video.Conv2Plus1D] = tv_video.Conv2Plus1D
    bn_eps = 1e-5  # nn.BatchNorm3d's default, as in torchvision's r2plus1d_18

    def __init__(self, width: int = 64) -> None:
        nn.Module.__init__(self)
        mid = width * 45 // 64  # torchvision's stem (and VMZ's): 45 mid channels for 64 output channels
        self.inplanes = width
        self.stem = nn.Sequential(
            nn.Conv3d(3, mid, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, width, kernel_size=(3, 1, 1), stride=(1, 1, 1), padding=(1, 0, 0), bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
        )
        block, conv = tv_video.BasicBlock, self.conv_builder
        self.layer1 = self._make_layer(block, conv, width, 2, stride=1)
        self.layer2 = self._make_layer(block, conv, 2 * width, 2, stride=2)
        self.layer3 = self._make_layer(block, conv, 4 * width, 2, stride=2)
        self.layer4 = self._make_layer(block, conv, 8 * width, 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc = nn.Identity()
        self.out_dim = 8 * width
        for m in self.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.eps = self.bn_eps
        _torchvision_init(self)


def vmz_midplanes(in_planes: int, out_planes: int) -> int:
    """The middle channels VMZ gives a (2+1)D conv of ``in_planes`` → ``out_planes``.

    The count that makes the (1x3x3 then 3x1x1) pair have about the parameters of one 3x3x3 conv
    (paper of R(2+1)D, Tran et al. 2018; ``add_conv`` of facebookresearch/VMZ
    ``lib/models/builder/video_model.py``).
    """
    return (in_planes * out_planes * 3 * 3 * 3) // (in_planes * 3 * 3 + 3 * out_planes)


class VmzConv2Plus1D(tv_video.Conv2Plus1D):
    """torchvision's (2+1)D conv with VMZ's middle channels, computed from this conv's own planes.

    torchvision's ``BasicBlock`` computes one ``midplanes`` from the block's *input* planes and
    passes it to both convs, so the second conv of a downsampling block (layer2-4, block 0) gets
    230/460/921 at width 64 where Caffe2 VMZ, and so the released XDC models, have 288/576/1152
    (facebookresearch/VMZ issue #89). Ignoring the ``midplanes`` argument gives VMZ's shapes and
    keeps torchvision's module layout, hence its state-dict keys.
    """

    def __init__(self, in_planes: int, out_planes: int, midplanes: int, stride: int = 1, padding: int = 1) -> None:
        super().__init__(in_planes, out_planes, vmz_midplanes(in_planes, out_planes), stride, padding)


class VmzVideoTrunk(VideoTrunk):
    """The R(2+1)D-18 of the released XDC models (VMZ/Caffe2), without the classifier.

    Differs from :class:`VideoTrunk` only in the middle channels of the second conv of the first
    block of layers 2-4 (:class:`VmzConv2Plus1D`) and in the BatchNorm epsilon, 1e-3 as in Caffe2
    (``SpatialBN(epsilon=1e-3)`` in VMZ): the weights were learnt with it, so features of the
    released models are only reproduced with it. The BatchNorm momentum stays PyTorch's 0.1, which
    *is* Caffe2's 0.9 (Caffe2 weighs the running average by it, PyTorch the new batch); ports that
    copy 0.9 literally change nothing at inference but would make running stats track the last batch.
    """

    conv_builder = VmzConv2Plus1D
    bn_eps = 1e-3


class AudioTrunk(tv_resnet.ResNet):
    """ResNet-18 on a 1-channel log-mel without the classifier: ``[B, 1, Q, P]`` → ``[B, 8·width]``."""

    def __init__(self, width: int = 64) -> None:
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = width, 1, 1, 64
        self.conv1 = nn.Conv2d(1, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        block = tv_resnet.BasicBlock
        self.layer1 = self._make_layer(block, width, 2)
        self.layer2 = self._make_layer(block, 2 * width, 2, stride=2)
        self.layer3 = self._make_layer(block, 4 * width, 2, stride=2)
        self.layer4 = self._make_layer(block, 8 * width, 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Identity()
        self.out_dim = 8 * width
        _torchvision_init(self)


Modality = str  # "video" or "audio"


VIDEO_TRUNKS: dict[str, type[VideoTrunk]] = {"r2plus1d_18": VideoTrunk, "r2plus1d_18_vmz": VmzVideoTrunk}


def build_trunk(modality: Modality, width: int = 64, video_arch: str = "r2plus1d_18") -> nn.Module:
    """A freshly initialised encoder trunk for ``modality`` (``video_arch``: one of ``VIDEO_ARCHS``,
    the ``model.video_arch`` setting; the audio trunk has one architecture)."""
    if modality == "video":
        if video_arch not in VIDEO_TRUNKS:
            raise ValueError(f"unknown video_arch {video_arch!r}; expected one of {', '.join(VIDEO_ARCHS)}")
        return VIDEO_TRUNKS[video_arch](width)
    if modality == "audio":
        return AudioTrunk(width)
    raise ValueError(f"unknown modality {modality!r}; expected 'video' or 'audio'")


def video_input(clips: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, 3, L, H, W]`` → normalised float (Kinetics mean/std)."""
    x = clips.float().div_(255.0)
    mean = torch.tensor(VIDEO_MEAN, device=x.device).view(1, 3, 1, 1, 1)
    std = torch.tensor(VIDEO_STD, device=x.device).view(1, 3, 1, 1, 1)
    return (x - mean) / std


def audio_input(logmel: torch.Tensor) -> torch.Tensor:
    """Log-mel ``[B, 1, Q, P]`` → zero mean, unit variance per spectrogram.

    Per-example standardisation makes the audio encoder blind to recording gain, as the
    video normalisation is to nothing in particular: gain is a property of the microphone,
    not of the scene.
    """
    mean = logmel.mean(dim=(1, 2, 3), keepdim=True)
    std = logmel.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-5)
    return (logmel - mean) / std


def model_input(modality: Modality, batch: torch.Tensor) -> torch.Tensor:
    return video_input(batch) if modality == "video" else audio_input(batch)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
