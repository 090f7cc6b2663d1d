"""The model: torchvision ResNet-50, unchanged except its input and output layers.

No pretrained weights (none can be fetched on compute nodes, and ImageNet RGB weights do
not fit 12 Sentinel-2 bands anyway): the first convolution takes ``bands`` channels and the
head has ``num_classes`` logits for BCE-with-logits (multi-label).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet50


def build_model(in_channels: int, num_classes: int) -> nn.Module:
    """ResNet-50 (He et al. 2016, torchvision's v1.5) for ``in_channels`` bands.

    The stem keeps torchvision's 7x7/2 convolution and max-pool: at 120x120 px the last
    stage still sees 4x4 features, as in the BigEarthNet reference models.
    """
    model = resnet50(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


def loss_fn() -> nn.Module:
    """Binary cross-entropy on logits: one independent yes/no per class."""
    return nn.BCEWithLogitsLoss()


def batchnorm_buffers(model: nn.Module) -> list[torch.Tensor]:
    """The floating-point running statistics of every BatchNorm layer."""
    return [b for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for b in (m.running_mean, m.running_var) if b is not None]
