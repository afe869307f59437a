"""DeepInversion-style input synthesis from a model's own BatchNorm statistics (docs/method.md §2.3).

No data is used: a batch x̂ (with random target classes t) is optimised with Adam to minimise

    L(x̂) = Σ_l ( ‖μ_l(x̂) − μ_l‖₂ + ‖σ²_l(x̂) − σ²_l‖₂ ) · (10 for the first BN, else 1)
           + w_ce · CE(f(x̂), t) + w_tv · TV(x̂) + w_l2 · ‖x̂‖²

where μ_l(x̂), σ²_l(x̂) are the per-channel batch mean and (biased) variance of the input of the
l-th BatchNormalization and μ_l, σ²_l its running statistics. The batch then stands in for data
when BN statistics of a folded model are re-estimated (Fold-DIR). Graphs without
BatchNormalization nodes have nothing to invert: :class:`ValueError`.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import numpy_helper

from onnxfold.repair.torch_graph import TorchGraph
from onnxfold.report.progress import progress_bar

log = logging.getLogger(__name__)


def bn_running_stats(proto: onnx.ModelProto) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Running (mean, var) of every BatchNormalization whose statistics are initializers."""
    inits = {t.name: t for t in proto.graph.initializer}
    stats = {}
    for node in proto.graph.node:
        if node.op_type == "BatchNormalization" and node.input[3] in inits and node.input[4] in inits:
            stats[node.name] = (
                numpy_helper.to_array(inits[node.input[3]]).astype(np.float32),
                numpy_helper.to_array(inits[node.input[4]]).astype(np.float32),
            )
    return stats


def input_shape(
    proto: onnx.ModelProto, count: int, override: tuple[int, ...] | None = None
) -> tuple[str, tuple]:
    inits = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ValueError(f"input synthesis needs a model with one input, this one has {len(inputs)}")
    inp = inputs[0]
    if override is not None:
        return inp.name, (count,) + tuple(override[1:])
    dims = []
    for i, d in enumerate(inp.type.tensor_type.shape.dim):
        if i == 0:
            dims.append(count)
        elif d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            raise ValueError(f"input {inp.name} has a symbolic dim {d.dim_param!r}; give --input-shape")
    return inp.name, tuple(dims)


def synthesize(
    proto: onnx.ModelProto,
    count: int = 256,
    iterations: int = 300,
    lr: float = 0.1,
    seed: int = 0,
    shape: tuple[int, ...] | None = None,
    ce_weight: float = 1.0,
    tv_weight: float = 1e-4,
    l2_weight: float = 1e-5,
    bounds: tuple[float, float] | None = None,
) -> np.ndarray:
    """Optimise a batch of ``count`` inputs whose BN statistics match the model's running statistics;
    ``bounds``: the range the input's values lie in (``--input-value``), drawn in and kept in by clipping
    after each step (unbounded, chesspdftofen's cells in [0, 1] were synthesised over [−2.8, 2.9])."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    stats = bn_running_stats(proto)
    if not stats:
        raise ValueError(
            "repair mode 'dir' does not apply: the model has no BatchNormalization statistics to "
            "invert (BN fused into the convolutions?); use 'ar' or 'data'"
        )
    graph = TorchGraph(proto, device)
    name, dims = input_shape(proto, count, shape)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(dims, generator=gen)
    if bounds is not None:
        x = bounds[0] + (bounds[1] - bounds[0]) * torch.rand(dims, generator=gen)
    x = x.to(device).requires_grad_(True)
    targets = None
    stats_t = {
        k: (torch.from_numpy(m).to(device), torch.from_numpy(v).to(device)) for k, (m, v) in stats.items()
    }
    first = next(n.name for n in graph.nodes if n.name in stats_t)
    bn_loss: list = []

    def hook(node, pre):
        if node.name not in stats_t:
            return
        red = [0] + list(range(2, pre.dim()))
        var, mean = torch.var_mean(pre, dim=red, unbiased=False)  # one pass, not two
        rm, rv = stats_t[node.name]
        term = torch.linalg.vector_norm(mean - rm) + torch.linalg.vector_norm(var - rv)
        bn_loss.append(term * (10.0 if node.name == first else 1.0))

    graph.bn_hook = hook
    opt = torch.optim.Adam([x], lr=lr, betas=(0.5, 0.9))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iterations)
    out_name = graph.graph.output[0].name
    for step in progress_bar(range(iterations), "deepinversion", unit="step"):
        bn_loss.clear()
        opt.zero_grad()
        logits = graph.run({name: x}, [out_name])[out_name]
        loss = torch.stack(bn_loss).sum()
        if ce_weight and logits.dim() == 2 and logits.shape[1] > 1:
            if targets is None:
                targets = torch.randint(0, logits.shape[1], (logits.shape[0],), generator=gen).to(device)
            loss = loss + ce_weight * torch.nn.functional.cross_entropy(logits, targets)
        if x.dim() == 4:
            tv = (x[:, :, 1:, :] - x[:, :, :-1, :]).pow(2).mean() + (x[:, :, :, 1:] - x[:, :, :, :-1]).pow(
                2
            ).mean()
            loss = loss + tv_weight * tv * x[0].numel()
        loss = loss + l2_weight * x.pow(2).sum() / count
        loss.backward()
        opt.step()
        sched.step()
        if bounds is not None:
            with torch.no_grad():
                x.clamp_(*bounds)
        if step % 100 == 0:
            log.info("deepinversion step %d: loss %.4f", step, loss.item())
    graph.bn_hook = None
    return x.detach().cpu().numpy().astype(np.float32)


def reestimate_bn(proto: onnx.ModelProto, batch: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-BN batch (mean, biased var) of the BN inputs, with every BN normalising by its batch
    statistics during the pass (PyTorch train-mode semantics, one forward pass)."""
    import torch

    graph = TorchGraph(proto)
    graph.calibrate_bn = True
    name, _ = input_shape(proto, len(batch))
    with torch.no_grad():
        graph.run({name: torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))})
    return graph.bn_stats


def not_float_input(model) -> str:
    """Why DeepInversion cannot optimise the model's first input ('' where it is float): TransNetV2's
    uint8 video frames read "the input dims are not fixed", which --input-shape could not change."""
    first = model.graph.inputs[0]
    dtype = np.dtype(first.dtype) if first.dtype is not None else None
    return (
        ""
        if dtype is None or dtype.kind == "f"
        else f"DeepInversion optimises a float input; {first.name} is {dtype}"
    )
