"""ImageNet architectures: torchvision's ResNet-50, the network of Cohen et al.'s ImageNet experts.

The published checkpoints wrap it as ``Sequential(NormalizeLayer, DataParallel(resnet50))``, so their
keys carry ``1.module.``; stripped, they are exactly torchvision's ``resnet50`` state-dict keys.
"""

from __future__ import annotations

from torch import nn


def resnet50(num_classes: int = 1000, input_shape: tuple[int, ...] | None = None) -> nn.Module:
    """torchvision ResNet-50 with random weights; ``input_shape`` may set the input channel count."""
    from torchvision.models import resnet50 as tv_resnet50

    model = tv_resnet50(weights=None, num_classes=num_classes)
    channels = int(input_shape[0]) if input_shape else 3
    if channels != 3:
        model.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model
