"""Build a wide model whose hidden channels are exact duplicates of a compact model's channels.

Mapping, used for every duplicated axis: wide index j ↔ compact index j mod n (the wide tensor is the compact
one tiled twice). Along a producer axis (axis 0 of a weight, every 1-D vector: bias, BN γ/β/μ/var) the values are
copied; along a consumer axis (axis 1 of a Conv/Linear weight) they are copied and halved, so
Σ_j ½·W[:, j mod n]·x[j mod n] = Σ_c W[:, c]·x[c] and the wide model computes exactly the compact function.
Tiling also handles Flatten→Linear: a flattened feature c·H·W + s of the wide map maps to (c mod C)·H·W + s,
which is j mod (C·H·W). Which axes are duplicated is read off the shapes (wide = 2 × compact).

Grouped convolutions (groups > 1) need each twin inside its own convolution group: with B the least common
multiple of their group counts, an axis of n channels is cut into gcd(B, n) equal blocks and each block is
tiled in place (channel i of block b has its twin right after the block's n/gcd(B, n) channels), so twins never
leave a block, nor hence a convolution group; a grouped Conv's input axis (its group's n/groups channels) is cut
into gcd(B, n)/groups blocks, which lines it up with its producer. Models without grouped convolutions keep the
plain tiling (B = 1); with B > 1 a Flatten of a spatial map is not supported.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .architectures import build_model, doubled_kwargs

__all__ = ["duplicate_channels", "duplication_spec", "make_duplicate_pair", "randomize_batchnorm"]

PRODUCER, CONSUMER = "copy", "halve"


def duplication_spec(compact: nn.Module, wide: nn.Module) -> dict[str, tuple[str | None, ...]]:
    """Per state-dict entry, per axis: ``"copy"`` (producer), ``"halve"`` (consumer) or None (not duplicated)."""
    small, big = compact.state_dict(), wide.state_dict()
    if small.keys() != big.keys():
        raise ValueError("compact and wide models have different state-dict keys")
    spec: dict[str, tuple[str | None, ...]] = {}
    for key, a in small.items():
        b = big[key]
        if a.dim() != b.dim():
            raise ValueError(f"{key}: rank differs ({tuple(a.shape)} vs {tuple(b.shape)})")
        roles: list[str | None] = []
        for axis, (n, m) in enumerate(zip(a.shape, b.shape, strict=True)):
            if m == n:
                roles.append(None)
            elif m == 2 * n and axis <= 1:
                roles.append(PRODUCER if axis == 0 else CONSUMER)
            else:
                raise ValueError(f"{key}: axis {axis} has {m} wide vs {n} compact entries")
        spec[key] = tuple(roles)
    return spec


def _tile(t: torch.Tensor, axis: int, blocks: int) -> torch.Tensor:
    """``t`` with ``axis`` cut into ``blocks`` equal blocks, each followed by a copy of itself."""
    shape = list(t.shape)
    cut = t.reshape(shape[:axis] + [blocks, shape[axis] // blocks] + shape[axis + 1 :])
    return torch.cat([cut, cut], dim=axis + 1).reshape(shape[:axis] + [2 * shape[axis]] + shape[axis + 1 :])


def grouped_convs(model: nn.Module) -> dict[str, int]:
    """Module name → ``groups`` of every convolution of ``model`` with groups > 1 (depthwise ones too: their
    twins then sit side by side, which is exact as well)."""
    return {
        name: m.groups
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1
    }


@torch.no_grad()
def duplicate_channels(compact: nn.Module, wide: nn.Module) -> nn.Module:
    """Load into ``wide`` the compact weights with every hidden channel duplicated (j ↔ j mod n, or within blocks
    when the model has grouped convolutions, see the module docstring); returns ``wide``."""
    spec = duplication_spec(compact, wide)
    groups = grouped_convs(compact)
    lcm = math.lcm(1, *groups.values())
    state = {}
    for key, value in compact.state_dict().items():
        t = value.clone()
        owner = groups.get(key.rpartition(".")[0], 1)
        for axis, role in enumerate(spec[key]):
            if role is None:
                continue
            n = t.shape[axis] * (owner if axis == 1 else 1)  # the channels of the space this axis reads
            blocks = math.gcd(lcm, n)
            if blocks % (owner if axis == 1 else 1):
                raise ValueError(
                    f"{key}: {n} channels cannot be duplicated within {owner} convolution groups"
                )
            t = _tile(t, axis, blocks // owner if axis == 1 else blocks)
            if role == CONSUMER:
                t = t * 0.5
        state[key] = t
    wide.load_state_dict(state)
    return wide


@torch.no_grad()
def randomize_batchnorm(model: nn.Module, generator: torch.Generator) -> None:
    """Give every BatchNorm non-trivial γ ~ U(0.5, 1.5), β ~ N(0, 0.2²), μ ~ N(0, 0.2²), var ~ U(0.5, 2)."""
    for mod in model.modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            n = mod.num_features
            mod.weight.copy_(0.5 + torch.rand(n, generator=generator))
            mod.bias.copy_(0.2 * torch.randn(n, generator=generator))
            mod.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
            mod.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=generator))


@torch.no_grad()
def _randomize_norm_weights(model: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial weights for parameterised norms other than BN (e.g. RMSNorm): w ~ U(0.5, 1.5)."""
    for mod in model.modules():
        if not isinstance(mod, nn.modules.batchnorm._BatchNorm) and type(mod).__name__.endswith("Norm"):
            w = getattr(mod, "weight", None)
            if isinstance(w, torch.Tensor):
                w.copy_(0.5 + torch.rand(w.shape, generator=generator))


def make_duplicate_pair(arch_name: str, seed: int = 0, **kwargs: Any) -> tuple[nn.Module, nn.Module]:
    """(compact, wide) in eval mode: compact has random weights and random BN/norm statistics, wide = its duplicate.

    ``kwargs`` are the compact constructor arguments; the wide model doubles every ``WIDTH_ARGS`` entry.
    """
    torch.manual_seed(seed)
    compact = build_model(arch_name, **kwargs)
    g = torch.Generator().manual_seed(seed + 1)
    randomize_batchnorm(compact, g)
    _randomize_norm_weights(compact, g)
    wide = build_model(arch_name, **doubled_kwargs(arch_name, kwargs))
    duplicate_channels(compact, wide)
    return compact.eval(), wide.eval()
