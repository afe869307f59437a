"""Public architectures in plain torch with random weights, sized for fast export and folding.

Each model is written from its paper's description and keeps the patterns that make it what it is
(bottlenecks, inverted residuals, squeeze-excitation gates, Fire concats, dense Concat chains,
channel split + shuffle, grouped convs (RegNetX, ResNeXt), channels-last LayerNorm + Linear MLPs,
attention, CSP splits with an FPN/PAN neck); widths and depths are reduced where noted so that every model stays
small. ``PUBLIC_MODELS[name]()`` builds a model deterministically (its own seed): weights are random,
normalisation affines are randomised and BatchNorm running statistics are calibrated on random
inputs, so that BN folding and per-channel scales are not trivial. ``PUBLIC_INPUTS[name]`` is the
input shape after the batch axis.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "PUBLIC_INPUTS",
    "PUBLIC_INPUTS_SMALL",
    "PUBLIC_MODELS",
    "PUBLIC_MODELS_SMALL",
    "ConvNeXt",
    "DenseNet",
    "EfficientNetB0",
    "MobileNetV2",
    "MobileNetV3Small",
    "RegNetX",
    "ResNeXt",
    "ResNet50",
    "ShapeArithmeticHead",
    "ShuffleNetV2",
    "SqueezeNet11",
    "ViT",
    "YOLODetector",
    "build_public",
    "public_input",
]


def _divisible(v: float, divisor: int = 8) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` that loses at most 10 % (MobileNet convention)."""
    out = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * v else out


def conv_bn(
    c_in: int, c_out: int, k: int = 3, stride: int = 1, groups: int = 1, act: type[nn.Module] | None = nn.ReLU
) -> nn.Sequential:
    """Conv (no bias, 'same' padding) → BatchNorm → optional activation."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- ResNet-50


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: 1×1 reduce → 3×3 (stride here) → 1×1 expand to planes×4, projection shortcut if
    needed. ResNeXt's: the 3×3 is grouped (``groups``) and ``mid`` channels wide (default ``planes``)."""

    expansion = 4

    def __init__(
        self, c_in: int, planes: int, stride: int = 1, mid: int | None = None, groups: int = 1
    ) -> None:
        super().__init__()
        c_out, mid = planes * self.expansion, mid or planes
        self.conv1 = conv_bn(c_in, mid, 1)
        self.conv2 = conv_bn(mid, mid, 3, stride, groups=groups)
        self.conv3 = conv_bn(mid, c_out, 1, act=None)
        self.downsample = conv_bn(c_in, c_out, 1, stride, act=None) if stride != 1 or c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return torch.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


class ResNet50(nn.Module):
    """ResNet-50: 7×7/2 stem + 3×3/2 max-pool, bottleneck stages (3, 4, 6, 3) of widths w·(1, 2, 4, 8), GAP, FC."""

    def __init__(
        self, width: int = 64, layers: Sequence[int] = (3, 4, 6, 3), num_classes: int = 1000
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, width, 7, 2), nn.MaxPool2d(3, 2, 1))
        blocks: list[nn.Module] = []
        c = width
        for i, n in enumerate(layers):
            planes = width * 2**i
            for j in range(n):
                blocks.append(Bottleneck(c, planes, 2 if i > 0 and j == 0 else 1))
                c = planes * Bottleneck.expansion
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


class ResNeXt(nn.Module):
    """ResNeXt (Xie et al. 2017): ResNet-50's layout whose 3×3 convs are grouped, ``groups`` groups of ``group_width``
    channels in stage 1, the group width doubling per stage (ResNeXt-50 32×4d: 32 × 4 = 128, …, 1024 channels)."""

    def __init__(
        self,
        width: int = 64,
        layers: Sequence[int] = (3, 4, 6, 3),
        groups: int = 32,
        group_width: int = 4,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, width, 7, 2), nn.MaxPool2d(3, 2, 1))
        blocks: list[nn.Module] = []
        c = width
        for i, n in enumerate(layers):
            planes, mid = width * 2**i, groups * group_width * 2**i
            for j in range(n):
                blocks.append(Bottleneck(c, planes, 2 if i > 0 and j == 0 else 1, mid, groups))
                c = planes * Bottleneck.expansion
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


# --------------------------------------------------------------------------- MobileNetV2


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1×1 expand (ReLU6) → 3×3 depthwise (ReLU6) → 1×1 linear project, residual if shapes match."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn(c_in, hidden, 1, act=nn.ReLU6))
        layers += [
            conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            conv_bn(hidden, c_out, 1, act=None),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (width multiplier ``alpha``): 32-ch stem, 17 inverted residuals, 1280-ch head, dropout, FC."""

    CFG: tuple[tuple[int, int, int, int], ...] = (  # expand t, channels c, repeats n, stride s
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(self, alpha: float = 1.0, num_classes: int = 1000, last: int = 1280) -> None:
        super().__init__()
        c = _divisible(32 * alpha)
        last = _divisible(last * max(1.0, alpha))
        layers: list[nn.Module] = [conv_bn(3, c, 3, 2, act=nn.ReLU6)]
        for t, ch, n, s in self.CFG:
            out = _divisible(ch * alpha)
            for i in range(n):
                layers.append(InvertedResidual(c, out, s if i == 0 else 1, t))
                c = out
        layers.append(conv_bn(c, last, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


# --------------------------------------------------------------------------- MobileNetV3-small


class SqueezeExcite(nn.Module):
    """x · gate(fc2(act(fc1(GAP(x))))) with 1×1 convs as the two FC layers."""

    def __init__(
        self,
        channels: int,
        squeeze: int,
        act: type[nn.Module] = nn.ReLU,
        gate: type[nn.Module] = nn.Hardsigmoid,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.act = act()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class MBV3Block(nn.Module):
    """MobileNetV3 block: optional 1×1 expand → k×k depthwise → optional SE (HardSigmoid gate) → 1×1 project."""

    def __init__(
        self, c_in: int, k: int, exp: int, c_out: int, se: bool, act: type[nn.Module], stride: int
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if exp != c_in:
            layers.append(conv_bn(c_in, exp, 1, act=act))
        layers.append(conv_bn(exp, exp, k, stride, groups=exp, act=act))
        if se:
            layers.append(SqueezeExcite(exp, _divisible(exp / 4)))
        layers.append(conv_bn(exp, c_out, 1, act=None))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV3Small(nn.Module):
    """MobileNetV3-small: HardSwish stem, 11 blocks (SE + HardSwish in the later ones), 576 → 1024 head."""

    CFG: tuple[tuple[int, int, int, bool, bool, int], ...] = (  # kernel, expand, out, SE, hardswish, stride
        (3, 16, 16, True, False, 2),
        (3, 72, 24, False, False, 2),
        (3, 88, 24, False, False, 1),
        (5, 96, 40, True, True, 2),
        (5, 240, 40, True, True, 1),
        (5, 240, 40, True, True, 1),
        (5, 120, 48, True, True, 1),
        (5, 144, 48, True, True, 1),
        (5, 288, 96, True, True, 2),
        (5, 576, 96, True, True, 1),
        (5, 576, 96, True, True, 1),
    )

    def __init__(self, alpha: float = 1.0, num_classes: int = 1000, head: int = 1024) -> None:
        super().__init__()
        c = _divisible(16 * alpha)
        layers: list[nn.Module] = [conv_bn(3, c, 3, 2, act=nn.Hardswish)]
        for k, exp, out, se, hs, s in self.CFG:
            exp, out = _divisible(exp * alpha), _divisible(out * alpha)
            layers.append(MBV3Block(c, k, exp, out, se, nn.Hardswish if hs else nn.ReLU, s))
            c = out
        last = _divisible(576 * alpha)
        layers.append(conv_bn(c, last, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(last, head), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(head, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


# --------------------------------------------------------------------------- EfficientNet-B0


class MBConv(nn.Module):
    """EfficientNet MBConv: 1×1 expand (SiLU) → k×k depthwise (SiLU) → SE (SiLU, sigmoid) → 1×1 project."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn(c_in, hidden, 1, act=nn.SiLU))
        layers += [
            conv_bn(hidden, hidden, k, stride, groups=hidden, act=nn.SiLU),
            SqueezeExcite(hidden, max(1, c_in // 4), act=nn.SiLU, gate=nn.Sigmoid),
            conv_bn(hidden, c_out, 1, act=None),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class EfficientNetB0(nn.Module):
    """EfficientNet-B0: 32-ch stem, 16 MBConv blocks in 7 stages, 1280-ch head, dropout, FC."""

    CFG: tuple[tuple[int, int, int, int, int], ...] = (  # expand, kernel, stride, out, repeats
        (1, 3, 1, 16, 1),
        (6, 3, 2, 24, 2),
        (6, 5, 2, 40, 2),
        (6, 3, 2, 80, 3),
        (6, 5, 1, 112, 3),
        (6, 5, 2, 192, 4),
        (6, 3, 1, 320, 1),
    )

    def __init__(self, width: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        c = _divisible(32 * width)
        layers: list[nn.Module] = [conv_bn(3, c, 3, 2, act=nn.SiLU)]
        for e, k, s, out, n in self.CFG:
            out = _divisible(out * width)
            for i in range(n):
                layers.append(MBConv(c, out, k, s if i == 0 else 1, e))
                c = out
        head = _divisible(1280 * width)
        layers.append(conv_bn(c, head, 1, act=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(head, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


# --------------------------------------------------------------------------- SqueezeNet 1.1


class Fire(nn.Module):
    """Fire module: 1×1 squeeze (ReLU), then Concat of 1×1 and 3×3 expands (each ReLU)."""

    def __init__(self, c_in: int, squeeze: int, e1: int, e3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(c_in, squeeze, 1)
        self.expand1 = nn.Conv2d(squeeze, e1, 1)
        self.expand3 = nn.Conv2d(squeeze, e3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.squeeze(x))
        return torch.cat([torch.relu(self.expand1(s)), torch.relu(self.expand3(s))], 1)


class SqueezeNet11(nn.Module):
    """SqueezeNet 1.1: 3×3/2 conv, 8 Fire modules between ceil-mode max-pools, 1×1 conv classifier, GAP."""

    def __init__(self, width: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()

        def w(c: int) -> int:
            return max(4, int(c * width))

        pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        layers: list[nn.Module] = [nn.Conv2d(3, w(64), 3, 2), nn.ReLU(), pool]
        c = w(64)
        for i, (sq, ex) in enumerate(
            ((16, 64), (16, 64), (32, 128), (32, 128), (48, 192), (48, 192), (64, 256), (64, 256))
        ):
            layers.append(Fire(c, w(sq), w(ex), w(ex)))
            c = 2 * w(ex)
            if i in (1, 3):
                layers.append(pool)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Conv2d(c, num_classes, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


# --------------------------------------------------------------------------- DenseNet


class DenseLayer(nn.Module):
    """BN → ReLU → 1×1 conv (bn_size·growth) → BN → ReLU → 3×3 conv (growth) on the Concat of all earlier maps."""

    def __init__(self, c_in: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.conv1(torch.relu(self.norm1(torch.cat(features, 1))))
        return self.conv2(torch.relu(self.norm2(x)))


class DenseBlock(nn.Module):
    def __init__(self, n: int, c_in: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([DenseLayer(c_in + i * growth, growth, bn_size) for i in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class DenseNet(nn.Module):
    """DenseNet-BC: 7×7/2 stem + max-pool, dense blocks joined by transitions (BN-ReLU-1×1 conv-AvgPool, ½)."""

    def __init__(
        self,
        growth: int = 32,
        blocks: Sequence[int] = (6, 12, 24, 16),
        init: int = 64,
        bn_size: int = 4,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, init, 7, 2), nn.MaxPool2d(3, 2, 1)]
        c = init
        for i, n in enumerate(blocks):
            layers.append(DenseBlock(n, c, growth, bn_size))
            c += n * growth
            if i != len(blocks) - 1:
                layers += [
                    nn.BatchNorm2d(c),
                    nn.ReLU(),
                    nn.Conv2d(c, c // 2, 1, bias=False),
                    nn.AvgPool2d(2, 2),
                ]
                c //= 2
        layers += [nn.BatchNorm2d(c), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


# --------------------------------------------------------------------------- ShuffleNetV2


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[N, g·c, H, W] → view [N, g, c, H, W] → swap g and c → flatten back (shapes read at run time)."""
    b, c, h, w = x.shape
    x = x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous()
    return x.view(b, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: stride 1 splits the channels in two halves, stride 2 uses both branches on all of them;
    the branch outputs are concatenated and shuffled."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = c_out // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                conv_bn(c_in, c_in, 3, stride, groups=c_in, act=None), conv_bn(c_in, half, 1)
            )
        b2_in = c_in if stride > 1 else half
        self.branch2 = nn.Sequential(
            conv_bn(b2_in, half, 1),
            conv_bn(half, half, 3, stride, groups=half, act=None),
            conv_bn(half, half, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNetV2 1.0×: 24-ch stem + max-pool, stages of (4, 8, 4) units, 1024-ch conv5, GAP, FC."""

    def __init__(
        self,
        widths: Sequence[int] = (24, 116, 232, 464, 1024),
        repeats: Sequence[int] = (4, 8, 4),
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, widths[0], 3, 2), nn.MaxPool2d(3, 2, 1)]
        c = widths[0]
        for out, n in zip(widths[1:4], repeats, strict=True):
            for i in range(n):
                layers.append(ShuffleUnit(c, out, 2 if i == 0 else 1))
                c = out
        layers.append(conv_bn(c, widths[4], 1))
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(widths[4], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean([2, 3]))


# --------------------------------------------------------------------------- RegNetX


class XBlock(nn.Module):
    """RegNetX block: 1×1 → 3×3 grouped (group width g, stride here) → 1×1, projection shortcut, ReLU after Add."""

    def __init__(self, c_in: int, c_out: int, stride: int, group_width: int) -> None:
        super().__init__()
        self.a = conv_bn(c_in, c_out, 1)
        self.b = conv_bn(c_out, c_out, 3, stride, groups=c_out // group_width)
        self.c = conv_bn(c_out, c_out, 1, act=None)
        self.proj = conv_bn(c_in, c_out, 1, stride, act=None) if stride != 1 or c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.proj is None else self.proj(x)
        return torch.relu(self.c(self.b(self.a(x))) + identity)


class RegNetX(nn.Module):
    """RegNetX-200MF: 32-ch stem, 4 stages of widths (24, 56, 152, 368) and depths (1, 1, 4, 7), group width 8."""

    def __init__(
        self,
        widths: Sequence[int] = (24, 56, 152, 368),
        depths: Sequence[int] = (1, 1, 4, 7),
        group_width: int = 8,
        num_classes: int = 1000,
        stem: int = 32,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, stem, 3, 2)]
        c = stem
        for w, d in zip(widths, depths, strict=True):
            for i in range(d):
                layers.append(XBlock(c, w, 2 if i == 0 else 1, group_width))
                c = w
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


# --------------------------------------------------------------------------- ConvNeXt


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of an NCHW map, written out (mean/var over dim 1), as ConvNeXt does."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class ConvNeXtBlock(nn.Module):
    """7×7 depthwise → permute to NHWC → LayerNorm → Linear 4d → GELU → Linear d → layer scale γ → permute → + x."""

    def __init__(self, dim: int, layer_scale: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(layer_scale * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """ConvNeXt: 4×4/4 patchify stem + LayerNorm, stages joined by LayerNorm + 2×2/2 conv, GAP → LayerNorm → FC."""

    def __init__(
        self,
        dims: Sequence[int] = (96, 192, 384, 768),
        depths: Sequence[int] = (3, 3, 9, 3),
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0])]
        for i, (d, n) in enumerate(zip(dims, depths, strict=True)):
            if i:
                layers += [LayerNorm2d(dims[i - 1]), nn.Conv2d(dims[i - 1], d, 2, 2)]
            layers += [ConvNeXtBlock(d) for _ in range(n)]
        self.features = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.features(x).mean([-2, -1])))


# --------------------------------------------------------------------------- ViT


class Attention(nn.Module):
    """Multi-head self-attention: one qkv Linear, softmax(q·kᵀ/√d)·v per head, output projection."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: x + MHA(LN(x)), then x + MLP(LN(x)) with a GELU MLP of ratio 4."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """ViT: patch-embedding conv, cls token, learned position embedding, encoder blocks, LN, head on the cls token."""

    def __init__(
        self,
        image: int = 224,
        patch: int = 16,
        dim: int = 192,
        depth: int = 12,
        heads: int = 3,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        tokens = (image // patch) ** 2 + 1
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.Sequential(*[EncoderBlock(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), 1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


# --------------------------------------------------------------------------- YOLO-style detector


def cbs(c_in: int, c_out: int, k: int = 1, stride: int = 1) -> nn.Sequential:
    """Conv → BN → SiLU, the YOLO 'Conv' unit."""
    return conv_bn(c_in, c_out, k, stride, act=nn.SiLU)


class YoloBottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool) -> None:
        super().__init__()
        self.cv1 = cbs(c, c, 3)
        self.cv2 = cbs(c, c, 3)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """CSP block with two convs: cv1 → chunk in two → bottlenecks on the last chunk, each output kept → Concat → cv2."""

    def __init__(self, c_in: int, c_out: int, n: int = 1, shortcut: bool = False) -> None:
        super().__init__()
        self.c = c_out // 2
        self.cv1 = cbs(c_in, 2 * self.c)
        self.cv2 = cbs((2 + n) * self.c, c_out)
        self.m = nn.ModuleList(YoloBottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): cv1, three chained 5×5 max-pools, Concat of all four, cv2."""

    def __init__(self, c_in: int, c_out: int, k: int = 5) -> None:
        super().__init__()
        hidden = c_in // 2
        self.cv1 = cbs(c_in, hidden)
        self.cv2 = cbs(4 * hidden, c_out)
        self.pool = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(self.pool(y[-1]))
        return self.cv2(torch.cat(y, 1))


class YOLODetector(nn.Module):
    """YOLOv8-style detector: CSP (C2f) backbone + SPPF, FPN/PAN neck (Upsample, Concat, C2f), decoupled heads.

    Each level's box (4·reg_max) and class (nc) maps are concatenated, flattened to anchors and the three
    levels concatenated: the output is [N, 4·reg_max + nc, anchors].
    """

    def __init__(
        self, width: float = 0.25, depth: float = 0.33, num_classes: int = 80, reg_max: int = 16
    ) -> None:
        super().__init__()

        def ch(c: int) -> int:
            return _divisible(min(c, 1024) * width)

        def rep(n: int) -> int:
            return max(round(n * depth), 1)

        c1, c2, c3, c4, c5 = ch(64), ch(128), ch(256), ch(512), ch(1024)
        self.stem = nn.Sequential(cbs(3, c1, 3, 2), cbs(c1, c2, 3, 2), C2f(c2, c2, rep(3), True))
        self.p3 = nn.Sequential(cbs(c2, c3, 3, 2), C2f(c3, c3, rep(6), True))
        self.p4 = nn.Sequential(cbs(c3, c4, 3, 2), C2f(c4, c4, rep(6), True))
        self.p5 = nn.Sequential(cbs(c4, c5, 3, 2), C2f(c5, c5, rep(3), True), SPPF(c5, c5))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.td4 = C2f(c5 + c4, c4, rep(3))
        self.td3 = C2f(c4 + c3, c3, rep(3))
        self.down3 = cbs(c3, c3, 3, 2)
        self.bu4 = C2f(c3 + c4, c4, rep(3))
        self.down4 = cbs(c4, c4, 3, 2)
        self.bu5 = C2f(c4 + c5, c5, rep(3))
        self.no = 4 * reg_max + num_classes
        box, cls = max(16, c3 // 4, 4 * reg_max), max(c3, min(num_classes, 100))
        self.box = nn.ModuleList(
            nn.Sequential(cbs(c, box, 3), cbs(box, box, 3), nn.Conv2d(box, 4 * reg_max, 1))
            for c in (c3, c4, c5)
        )
        self.cls = nn.ModuleList(
            nn.Sequential(cbs(c, cls, 3), cbs(cls, cls, 3), nn.Conv2d(cls, num_classes, 1))
            for c in (c3, c4, c5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p3 = self.p3(self.stem(x))
        p4 = self.p4(p3)
        p5 = self.p5(p4)
        t4 = self.td4(torch.cat([self.up(p5), p4], 1))
        n3 = self.td3(torch.cat([self.up(t4), p3], 1))
        n4 = self.bu4(torch.cat([self.down3(n3), t4], 1))
        n5 = self.bu5(torch.cat([self.down4(n4), p5], 1))
        outs = []
        for feat, box, cls in zip((n3, n4, n5), self.box, self.cls, strict=True):
            y = torch.cat([box(feat), cls(feat)], 1)
            outs.append(y.view(y.shape[0], self.no, -1))
        return torch.cat(outs, 2)


# --------------------------------------------------------------------------- Paddle-style shape-arithmetic head


class ShapeArithmeticHead(nn.Module):
    """A PP-LCNet / PP-OCR style network whose Reshape targets are computed from the input's shape at run time,
    as Paddle2ONNX writes them: depthwise-separable Conv-BN-HardSwish blocks, an SVTR-like token mixer
    (``x.reshape(b, c, h * w)``, a Linear over the channels, ``reshape(b, d, h, w)`` back) and a pooled head
    flattened by ``y.reshape(y.shape[0], y.shape[1] * y.shape[2] * y.shape[3])``. The legacy exporter writes
    each target as Shape → Gather → Mul → Unsqueeze → Concat → Reshape."""

    def __init__(
        self, widths: Sequence[int] = (16, 32, 64, 128), dim: int = 96, num_classes: int = 10
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, widths[0], 3, 2, act=nn.Hardswish)]
        for c_in, c_out in zip(widths, widths[1:], strict=False):
            layers += [
                conv_bn(c_in, c_in, 3, 2, groups=c_in, act=nn.Hardswish),
                conv_bn(c_in, c_out, 1, act=nn.Hardswish),
            ]
        self.features = nn.Sequential(*layers)
        self.mix = nn.Linear(widths[-1], dim)
        self.act = nn.Hardswish()
        self.conv = conv_bn(dim, widths[-1], 1, act=nn.Hardswish)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        b, c, h, w = x.shape
        t = self.act(self.mix(x.reshape(b, c, h * w).transpose(1, 2)))  # [B, HW, D]
        y = self.pool(self.conv(t.transpose(1, 2).reshape(b, t.shape[2], h, w)))
        return self.fc(y.reshape(y.shape[0], y.shape[1] * y.shape[2] * y.shape[3]))


# --------------------------------------------------------------------------- registry


@torch.no_grad()
def randomize_(model: nn.Module, seed: int, calib_shape: tuple[int, ...] | None = None) -> nn.Module:
    """Give normalisation layers and layer scales random values and calibrate BN statistics on random inputs.

    Affine γ ~ U(0.5, 1.5), β ~ N(0, 0.1²); ConvNeXt layer scales γ ~ U(0.1, 1). With ``calib_shape``, BN running
    statistics are the mean/variance over one random batch of eight inputs of that shape (train mode), so that the
    activations of a deep random network keep a sane scale; otherwise they are random.
    """
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm2d, nn.LayerNorm, LayerNorm2d)):
            module.weight.copy_(torch.rand(module.weight.shape, generator=g) + 0.5)
            module.bias.copy_(torch.randn(module.bias.shape, generator=g) * 0.1)
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=g) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=g) + 0.5)
        if isinstance(module, ConvNeXtBlock):
            module.gamma.copy_(torch.rand(module.gamma.shape, generator=g) * 0.9 + 0.1)
    if calib_shape is not None:
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average
        model.train()
        model(torch.randn(8, *calib_shape, generator=g))
    return model.eval()


def _seed_of(name: str) -> int:
    return zlib.crc32(name.encode())


def _builder(name: str, factory: Callable[[], nn.Module], shape: tuple[int, ...]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_seed_of(name))
            return randomize_(factory(), _seed_of(name) + 1, shape)

    build.__name__ = f"build_{re.sub(r'[^0-9a-zA-Z]', '_', name)}"
    build.__doc__ = f"{name} with deterministic random weights, in eval mode."
    return build


# name: (default factory, small factory, input shape after the batch axis). Defaults keep the published widths
# and depths except where noted; the small variants (tests) divide widths by 4-16 and shorten some stages, so that
# no channel group is much wider than ~150 (clustering wide groups dominates folding time).
_FACTORIES: dict[str, tuple[Callable[[], nn.Module], Callable[[], nn.Module], tuple[int, ...]]] = {
    # published widths and depths: 23.5M params with 10 classes
    "resnet50": (
        lambda: ResNet50(num_classes=10),
        lambda: ResNet50(width=4, layers=(2, 2, 2, 2), num_classes=10),
        (3, 64, 64),
    ),
    # ResNeXt-50 32×4d: 23.0M params with 10 classes; small: 4 groups of 2 channels in stage 1
    "resnext50-32x4d": (
        lambda: ResNeXt(num_classes=10),
        lambda: ResNeXt(width=4, layers=(2, 2, 2, 2), groups=4, group_width=2, num_classes=10),
        (3, 64, 64),
    ),
    "mobilenetv2": (
        lambda: MobileNetV2(num_classes=10),
        lambda: MobileNetV2(alpha=0.125, last=64, num_classes=10),
        (3, 64, 64),
    ),
    "mobilenetv3-small": (
        lambda: MobileNetV3Small(num_classes=10),
        lambda: MobileNetV3Small(alpha=0.25, head=64, num_classes=10),
        (3, 64, 64),
    ),
    "efficientnet-b0": (
        lambda: EfficientNetB0(num_classes=10),
        lambda: EfficientNetB0(width=0.125, num_classes=10),
        (3, 64, 64),
    ),
    "squeezenet1.1": (
        lambda: SqueezeNet11(num_classes=10),
        lambda: SqueezeNet11(width=0.25, num_classes=10),
        (3, 64, 64),
    ),
    # DenseNet-121 pattern with growth 16 and blocks (3, 6, 12, 8) instead of 32 and (6, 12, 24, 16)
    "densenet-small": (
        lambda: DenseNet(growth=16, blocks=(3, 6, 12, 8), init=32, num_classes=10),
        lambda: DenseNet(growth=8, blocks=(2, 3, 4, 3), init=16, num_classes=10),
        (3, 64, 64),
    ),
    "shufflenetv2": (
        lambda: ShuffleNetV2(num_classes=10),
        lambda: ShuffleNetV2((16, 32, 48, 64, 96), (2, 3, 2), num_classes=10),
        (3, 64, 64),
    ),
    "regnetx-200mf": (
        lambda: RegNetX(num_classes=10),
        lambda: RegNetX((16, 32, 64, 128), (1, 1, 2, 2), num_classes=10, stem=16),
        (3, 64, 64),
    ),
    # ConvNeXt-nano-like widths and depths (tiny is 96..768 × (3, 3, 9, 3), 28M params)
    "convnext-nano": (
        lambda: ConvNeXt(dims=(80, 160, 320, 640), depths=(2, 2, 8, 2), num_classes=10),
        lambda: ConvNeXt(dims=(8, 16, 24, 32), depths=(1, 1, 2, 1), num_classes=10),
        (3, 64, 64),
    ),
    # ViT-Ti/8 on 64×64: 64 patches + cls token, dim 192, 12 blocks, 3 heads
    "vit-tiny": (
        lambda: ViT(image=64, patch=8, num_classes=10),
        lambda: ViT(image=32, patch=8, dim=48, depth=2, heads=3, num_classes=10),
        (3, 64, 64),
    ),
    # PP-LCNet-like widths; every Reshape target is computed from Shape at run time (legacy export)
    "paddle-style-head": (
        lambda: ShapeArithmeticHead(),
        lambda: ShapeArithmeticHead((8, 16, 24, 32), dim=24),
        (3, 32, 128),
    ),
    "yolov8n-like": (
        lambda: YOLODetector(num_classes=80),
        lambda: YOLODetector(width=0.0625, num_classes=8, reg_max=4),
        (3, 64, 64),
    ),
}
# small variants see 32×32 inputs, except YOLO whose P5 level would otherwise be 1×1
_SMALL_INPUTS: dict[str, tuple[int, ...]] = {"vit-tiny": (3, 32, 32), "yolov8n-like": (3, 64, 64)}

PUBLIC_INPUTS: dict[str, tuple[int, ...]] = {name: shape for name, (_, _, shape) in _FACTORIES.items()}
PUBLIC_INPUTS_SMALL: dict[str, tuple[int, ...]] = {
    name: _SMALL_INPUTS.get(name, (3, 32, 32)) for name in _FACTORIES
}
PUBLIC_MODELS: dict[str, Callable[[], nn.Module]] = {
    name: _builder(name, f, PUBLIC_INPUTS[name]) for name, (f, _, _) in _FACTORIES.items()
}
PUBLIC_MODELS_SMALL: dict[str, Callable[[], nn.Module]] = {
    name: _builder(name, f, PUBLIC_INPUTS_SMALL[name]) for name, (_, f, _) in _FACTORIES.items()
}


def build_public(name: str, small: bool = False) -> nn.Module:
    """The public model ``name`` (its ``small`` variant if asked) with deterministic random weights, in eval mode."""
    try:
        return (PUBLIC_MODELS_SMALL if small else PUBLIC_MODELS)[name]()
    except KeyError:
        raise ValueError(f"unknown public model {name!r}; known: {sorted(PUBLIC_MODELS)}") from None


def public_input(name: str, batch: int = 2, seed: int = 0, small: bool = False) -> torch.Tensor:
    """A random N(0, 1) input of the shape ``name`` (or its small variant) expects."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *(PUBLIC_INPUTS_SMALL if small else PUBLIC_INPUTS)[name], generator=g)


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


if __name__ == "__main__":  # pragma: no cover - a quick listing
    import sys

    _small = "--small" in sys.argv
    for _name in PUBLIC_MODELS:
        _m = build_public(_name, _small)
        with torch.no_grad():
            _y = _m(public_input(_name, small=_small))
        print(
            f"{_name:18s} {param_count(_m) / 1e6:6.2f}M params  output {tuple(_y.shape)}  "
            f"log10 std {math.log10(float(_y.std()) + 1e-30):.1f}"
        )
