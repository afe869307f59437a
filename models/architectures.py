"""Reference architectures in plain torch (no torchvision), small enough for tests and sized by width arguments.

Every model takes ``num_classes`` and one or more width arguments. ``WIDTH_ARGS`` on each class names the
constructor arguments that set hidden widths; doubling all of them doubles every hidden channel and nothing
else (see :mod:`onnxfold.models.duplicate`). ``build_model(name, **kwargs)`` builds one by its registry name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

__all__ = [
    "ARCHITECTURES",
    "BasicBlock",
    "GatedMLPNet",
    "LeNet5",
    "MLP",
    "RMSNorm",
    "ResNet18",
    "VGG11BN",
    "build_model",
    "doubled_kwargs",
    "example_input",
]


class BasicBlock(nn.Module):
    """y = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); shortcut = 1x1 conv + BN when shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18: 3x3 stem (no maxpool), stages of widths base·(1, 2, 4, 8), GAP, flatten, linear."""

    WIDTH_ARGS: ClassVar[tuple[str, ...]] = ("base_width",)

    def __init__(
        self,
        base_width: int = 64,
        num_classes: int = 10,
        in_channels: int = 3,
        blocks: Sequence[int] = (2, 2, 2, 2),
    ) -> None:
        super().__init__()
        widths = [base_width * m for m in (1, 2, 4, 8)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_planes = widths[0]
        for i, (planes, n) in enumerate(zip(widths, blocks, strict=True)):
            layers = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                layers.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.linear = nn.Linear(widths[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(self.flatten(self.avgpool(out)))


_VGG11_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG11BN(nn.Module):
    """VGG-11 with BN; channels scaled by base_width/64; only the first ``num_pools`` max-pools are kept.

    The final C×(s/2^p)×(s/2^p) map is flattened (channel-major: feature = c·H·W + h·W + w) into the
    original two hidden FC layers: Linear→ReLU→Dropout→Linear→ReLU→Dropout→Linear.
    """

    WIDTH_ARGS: ClassVar[tuple[str, ...]] = ("base_width", "hidden")

    def __init__(
        self,
        base_width: int = 64,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        num_pools: int = 4,
        hidden: int = 4096,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if not 0 <= num_pools <= 5 or input_size % (2**num_pools):
            raise ValueError(f"input_size {input_size} is not divisible by 2**{num_pools}")
        layers: list[nn.Module] = []
        c, pools = in_channels, 0
        for v in _VGG11_CFG:
            if v == "M":
                if pools < num_pools:
                    layers.append(nn.MaxPool2d(2, 2))
                    pools += 1
                continue
            out = int(v) * base_width // 64
            layers += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            c = out
        self.features = nn.Sequential(*layers)
        side = input_size // 2**num_pools
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Sequential(
            nn.Linear(c * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.features(x)))


class MLP(nn.Module):
    """Flatten, then Linear-ReLU for each hidden size, then a Linear to num_classes."""

    WIDTH_ARGS: ClassVar[tuple[str, ...]] = ("hidden",)

    def __init__(
        self, in_features: int = 64, hidden: Sequence[int] = (256, 128), num_classes: int = 10
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten(1)]
        d = in_features
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        layers.append(nn.Linear(d, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LeNet5(nn.Module):
    """LeNet-5 style: (conv5x5-relu-maxpool2)×2, flatten of C×(s/4)×(s/4), FC-relu-FC-relu-FC."""

    WIDTH_ARGS: ClassVar[tuple[str, ...]] = ("channels", "hidden")

    def __init__(
        self,
        channels: Sequence[int] = (6, 16),
        hidden: Sequence[int] = (120, 84),
        num_classes: int = 10,
        in_channels: int = 1,
        input_size: int = 8,
        padding: int = 2,
    ) -> None:
        super().__init__()
        c1, c2 = channels
        self.conv1 = nn.Conv2d(in_channels, c1, 5, padding=padding)
        self.conv2 = nn.Conv2d(c1, c2, 5, padding=padding)
        self.pool = nn.MaxPool2d(2, 2)
        side = input_size
        for _ in range(2):
            side = (side + 2 * padding - 4) // 2
        if side < 1:
            raise ValueError(f"input_size {input_size} too small for padding {padding}")
        self.flatten = nn.Flatten(1)
        self.fc1 = nn.Linear(c2 * side * side, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.fc3 = nn.Linear(hidden[1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = self.flatten(x)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x², -1) + eps) · weight, written out so it exports as Pow/ReduceMean/Add/Sqrt/Div/Mul."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ms = torch.mean(x.pow(2), dim=-1, keepdim=True)
        return x / torch.sqrt(ms + self.eps) * self.weight


class GatedMLPBlock(nn.Module):
    """x + down(SiLU(gate(n)) · up(n)) with n = RMSNorm(x): a LLaMA-style MLP block with pre-norm residual."""

    def __init__(self, hidden: int, intermediate: int, bias: bool = False, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = RMSNorm(hidden, eps)
        self.gate_proj = nn.Linear(hidden, intermediate, bias=bias)
        self.up_proj = nn.Linear(hidden, intermediate, bias=bias)
        self.down_proj = nn.Linear(intermediate, hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.norm(x)
        return x + self.down_proj(nn.functional.silu(self.gate_proj(n)) * self.up_proj(n))


class GatedMLPNet(nn.Module):
    """Stack of gated MLP blocks on [batch, seq, hidden], then a final RMSNorm and an output Linear."""

    WIDTH_ARGS: ClassVar[tuple[str, ...]] = ("intermediate",)

    def __init__(
        self,
        hidden: int = 32,
        intermediate: int = 64,
        depth: int = 2,
        num_classes: int = 10,
        bias: bool = False,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList([GatedMLPBlock(hidden, intermediate, bias, eps) for _ in range(depth)])
        self.norm = RMSNorm(hidden, eps)
        self.head = nn.Linear(hidden, num_classes, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x))


ARCHITECTURES: dict[str, type[nn.Module]] = {
    "resnet18": ResNet18,
    "vgg11bn": VGG11BN,
    "mlp": MLP,
    "lenet5": LeNet5,
    "gatedmlp": GatedMLPNet,
}


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate the architecture registered as ``name`` with the given constructor arguments."""
    try:
        cls = ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; known: {sorted(ARCHITECTURES)}") from None
    return cls(**kwargs)


def doubled_kwargs(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments with every hidden width doubled (the arguments listed in ``WIDTH_ARGS``).

    Arguments left at their default are doubled too, so the result is always explicit.
    """
    import inspect

    cls = ARCHITECTURES[name]
    defaults = {
        k: p.default for k, p in inspect.signature(cls.__init__).parameters.items() if k in cls.WIDTH_ARGS
    }
    out = dict(kwargs)
    for key in cls.WIDTH_ARGS:
        value = kwargs.get(key, defaults[key])
        out[key] = tuple(2 * v for v in value) if isinstance(value, (tuple, list)) else 2 * value
    return out


def example_input(name: str, batch: int = 2, seed: int = 0, seq: int = 5, **kwargs: Any) -> torch.Tensor:
    """A random input of the shape ``name`` expects under constructor ``kwargs``: NCHW, [B, F] or [B, seq, H]."""
    g = torch.Generator().manual_seed(seed)
    if name == "gatedmlp":
        return torch.randn(batch, seq, kwargs.get("hidden", 32), generator=g)
    if name == "mlp":
        return torch.randn(batch, kwargs.get("in_features", 64), generator=g)
    default_c, default_s = (1, 8) if name == "lenet5" else (3, 32)
    c = kwargs.get("in_channels", default_c)
    s = kwargs.get("input_size", default_s)
    return torch.randn(batch, c, s, s, generator=g)
