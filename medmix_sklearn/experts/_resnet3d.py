"""Inflated 3-D ResNets: a 2-D ResNet with every convolution given a depth.

Pure torch, imported only when a 3-D volume model is built. The stem is a
3x7x7 convolution with stride (1, 2, 2) and a 3x3x3 max pool with stride 2;
every 3x3 convolution of the residual blocks becomes 3x3x3, and a block that
downsamples does so along all three axes. Entry names follow the usual ResNet
layout (``conv1``, ``bn1``, ``layer1.0.conv2``, ``layer1.0.downsample.0``), so
state dicts of inflated ResNets saved under those names load by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ARCHITECTURES", "ResNet3d", "build_resnet3d"]


@dataclass(frozen=True)
class Architecture:
    block: str  # "basic" or "bottleneck"
    layers: tuple[int, int, int, int]
    width: int  # channels after the stem
    in_channels: int  # a grayscale volume is repeated over this many channels

    @property
    def output_dim(self) -> int:
        expansion = 4 if self.block == "bottleneck" else 1
        return self.width * 8 * expansion


ARCHITECTURES: dict[str, Architecture] = {
    "i3resnet18": Architecture("basic", (2, 2, 2, 2), 64, 3),
    "i3resnet50": Architecture("bottleneck", (3, 4, 6, 3), 64, 3),
    "i3resnet152": Architecture("bottleneck", (3, 8, 36, 3), 64, 3),
    # Tiny, for tests and examples: 64-d output, a few thousand parameters.
    "test_i3resnet": Architecture("basic", (1, 1, 1, 1), 8, 1),
}


class _Basic(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: bool):
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(inplanes, planes, stride) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: bool):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv3d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        # The stride sits on the 3x3x3 convolution (ResNet v1.5).
        self.conv2 = nn.Conv3d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(inplanes, out, stride) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _shortcut(inplanes: int, out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm3d(out)
    )


class ResNet3d(nn.Module):
    """An inflated 3-D ResNet returning globally average-pooled features.

    Input ``(batch, 1, depth, height, width)``; output ``(batch, output_dim)``.
    """

    def __init__(self, arch: Architecture):
        super().__init__()
        self.in_channels = arch.in_channels
        block = _Bottleneck if arch.block == "bottleneck" else _Basic
        w = arch.width
        self.conv1 = nn.Conv3d(
            arch.in_channels, w, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False
        )
        self.bn1 = nn.BatchNorm3d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
        inplanes = w
        for index, (count, planes) in enumerate(zip(arch.layers, (w, 2 * w, 4 * w, 8 * w))):
            stride = 1 if index == 0 else 2
            blocks = []
            for b in range(count):
                needs_shortcut = b == 0 and (stride != 1 or inplanes != planes * block.expansion)
                blocks.append(block(inplanes, planes, stride if b == 0 else 1, needs_shortcut))
                inplanes = planes * block.expansion
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
        self.output_dim = inplanes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 1, D, H, W) -> (B, C_in, D, H, W)
        if self.in_channels != x.shape[1]:
            x = x.expand(-1, self.in_channels, -1, -1, -1)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3, 4))  # (B, output_dim)


def build_resnet3d(name: str) -> ResNet3d:
    """The architecture called ``name`` (a key of :data:`ARCHITECTURES`), randomly initialised."""
    return ResNet3d(ARCHITECTURES[name])
