"""The two encoders of the paper (§4.1), built from torchvision's own blocks.

* video: R(2+1)D-18 trunk (``torchvision.models.video.r2plus1d_18`` without its fc), 512-d;
* audio: ResNet-18 trunk (``torchvision.models.resnet18`` without its fc) whose first conv takes
  the 1-channel log-mel image, 512-d.

``width`` is the number of channels of the first stage (64 in torchvision; the stages have
width, 2·width, 4·width, 8·width channels). At ``width=64`` the state dicts are exactly
torchvision's (minus ``fc``), so a checkpoint loads into ``r2plus1d_18()`` / an adapted
``resnet18()``; slim widths keep the same structure and keys for fast CPU runs and tests.

Inputs are normalised here (:func:`video_input`, :func:`audio_input`) rather than inside the
modules, so the trunks stay plain torchvision architectures.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.models.video import resnet as tv_video


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

    def __init__(self, width: int = 64) -> None:
        nn.Module.__init__(self)
        mid = width * 45 // 64  # torchvision's stem: 45 mid channels for 64 output channels
        self.inplanes = width
        self.stem = nn.Sequential(
            nn.Conv3d(3, mid, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, width, kernel_size=(3, 1, 1), stride=(1, 1, 1), padding=(1, 0, 0), bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
        )
        block, conv = tv_video.BasicBlock, tv_video.Conv2Plus1D
        self.layer1 = self._make_layer(block, conv, width, 2, stride=1)
        self.layer2 = self._make_layer(block, conv, 2 * width, 2, stride=2)
        self.layer3 = self._make_layer(block, conv, 4 * width, 2, stride=2)
        self.layer4 = self._make_layer(block, conv, 8 * width, 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc = nn.Identity()
        self.out_dim = 8 * width
        _torchvision_init(self)


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


def build_trunk(modality: Modality, width: int = 64) -> nn.Module:
    """A freshly initialised encoder trunk for ``modality``."""
    if modality == "video":
        return VideoTrunk(width)
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
