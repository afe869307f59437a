"""ImageNet-style reference architectures in plain torch (no torchvision), for the speed benchmark.

* :class:`ResNet18ImageNet`: the torchvision layout (7×7 stride-2 stem, 3×3 stride-2 max-pool, BasicBlocks
  of widths 64, 128, 256, 512 with 1×1 stride-2 projection shortcuts, global average pool, linear).
* :class:`MobileNetV2`: inverted residual blocks (1×1 expand, 3×3 depthwise, 1×1 linear project) with
  ReLU6, the torchvision stage table and a 1280-wide last 1×1 conv.

Both take ``width``, a multiplier of every hidden width (``width=0.5`` is the natively half-width
network that folding at channel sparsity 0.5 should match). Weights are random (He-style init, BN
statistics perturbed so that BN is not an identity); the benchmark measures speed, not accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from onnxfold.models.architectures import BasicBlock

__all__ = ["MobileNetV2", "ResNet18ImageNet", "randomize_bn"]


def _scaled(channels: int, width: float, divisor: int = 1) -> int:
    """``channels·width`` rounded to a multiple of ``divisor`` (at least ``divisor``)."""
    return max(divisor, int(round(channels * width / divisor)) * divisor)


class ResNet18ImageNet(nn.Module):
    """torchvision-style ResNet-18 for 224×224 inputs; widths 64·width … 512·width."""

    def __init__(
        self,
        width: float = 1.0,
        num_classes: int = 1000,
        in_channels: int = 3,
        blocks: Sequence[int] = (2, 2, 2, 2),
    ) -> None:
        super().__init__()
        widths = [_scaled(c, width) for c in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_planes = widths[0]
        for i, (planes, n) in enumerate(zip(widths, blocks, strict=True)):
            layers = []
            for j in range(n):
                layers.append(BasicBlock(in_planes, planes, 2 if (i > 0 and j == 0) else 1))
                in_planes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(widths[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(self.flatten(self.avgpool(out)))


class InvertedResidual(nn.Module):
    """1×1 expand (skipped when expand_ratio is 1) → 3×3 depthwise → 1×1 linear projection (+ identity)."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_residual = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += [nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


# (expand ratio, channels, repeats, first stride), as in torchvision.
_MOBILENET_V2_CFG: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2(nn.Module):
    """MobileNetV2 for 224×224 inputs; every width (including the 1280 last conv) scaled by ``width``."""

    def __init__(
        self, width: float = 1.0, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.2
    ) -> None:
        super().__init__()
        c = _scaled(32, width)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, c, 3, 2, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU6(inplace=True),
        ]
        for t, ch, n, s in _MOBILENET_V2_CFG:
            out = _scaled(ch, width)
            for i in range(n):
                layers.append(InvertedResidual(c, out, s if i == 0 else 1, t))
                c = out
        last = _scaled(1280, width)
        layers += [nn.Conv2d(c, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.avgpool(self.features(x))))


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm random affine parameters and running statistics (in place); returns ``model``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.1 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return model
