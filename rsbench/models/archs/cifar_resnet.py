"""CIFAR ResNets (He et al. 2016, section 4.2) with the exact parameter layout of Cohen et al.'s models.

``cifar_resnet20`` / ``cifar_resnet110`` have the state-dict keys and shapes of the published Cohen and
SmoothAdv checkpoints once their ``1.`` prefix is stripped (``tests/data/checkpoint_layouts.tsv``):
``conv1``, ``bn1``, ``layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}``, a 1x1 conv + BN ``downsample`` on the
first block of layers 2 and 3, and ``fc``. Global average pooling makes them accept any input size.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN projection) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class CifarResNet(nn.Module):
    """ResNet of depth 6n + 2 with three stages of 16, 32, 64 channels."""

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"depth={depth} is not 6n + 2 with n >= 1 (e.g. 20, 56, 110)")
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(16, 16, blocks, stride=1)
        self.layer2 = self._stage(16, 32, blocks, stride=2)
        self.layer3 = self._stage(32, 64, blocks, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels
                module.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.data.fill_(1)
                module.bias.data.zero_()

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_planes, planes, stride)]
        layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _channels(input_shape: tuple[int, ...] | None) -> int:
    return int(input_shape[0]) if input_shape else 3


def cifar_resnet20(
    num_classes: int = 10, input_shape: tuple[int, ...] | None = None
) -> CifarResNet:
    """ResNet-20 for 32x32 images (3 blocks per stage)."""
    return CifarResNet(20, num_classes=num_classes, in_channels=_channels(input_shape))


def cifar_resnet110(
    num_classes: int = 10, input_shape: tuple[int, ...] | None = None
) -> CifarResNet:
    """ResNet-110 for 32x32 images (18 blocks per stage), as in Cohen et al. and SmoothAdv."""
    return CifarResNet(110, num_classes=num_classes, in_channels=_channels(input_shape))
