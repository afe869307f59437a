"""onnxruntime's fused ops written back as the standard ops they fuse, for the analysis.

A model saved after onnxruntime's extended optimisations holds com.microsoft ops: ``FusedConv`` =
act(Conv(x, W, b) + z), ``FusedGemm`` = act(Gemm(a, B, c)), ``FusedMatMul`` = alpha · op(a) · op(b)
(op: a transpose of the last two axes where ``transA`` / ``transB`` say). The analysis knows the
standard ops, so each is rewritten as them (the activation a node of its own, the transposes
Transpose nodes, alpha a Mul). Values are the same; onnxruntime fuses them again when it loads the
written model. Canonicalize keeps the graph as it was for a fold that folds nothing
(:attr:`~onnxfold.ir.model.Model.unrewritten`). A FusedMatMul with ``transBatchA``/``transBatchB`` or
an activation that names no standard op stays as it is.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxfold.ir.edit import Names

#: the activations onnxruntime fuses, with the attributes of the standard op from its parameters
_ACTIVATIONS = {
    "Relu": (),
    "Tanh": (),
    "Sigmoid": (),
    "LeakyRelu": ("alpha",),
    "HardSigmoid": ("alpha", "beta"),
}


class _Made(Names):
    """New names, none the graph holds, and the transposed copy of each weight made so far."""

    def __init__(self, graph: gs.Graph) -> None:
        super().__init__(graph)
        self.transposed: dict[int, gs.Constant] = {}


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _activation(
    node: gs.Node, params: list[float], x: gs.Tensor, y: gs.Tensor, graph: gs.Graph, names: _Made
) -> bool:
    """Append the activation ``node`` names, ``y`` = act(``x``); False for one without a standard op."""
    kind = _text(node.attrs.get("activation", ""))
    if kind == "Clip" and len(params) == 2:
        bounds = [
            gs.Constant(names(f"{node.name}_clip_{i}"), np.array(v, dtype=np.float32))
            for i, v in enumerate(params)
        ]
        graph.nodes.append(gs.Node("Clip", names(f"{node.name}_act"), inputs=[x, *bounds], outputs=[y]))
        return True
    if kind not in _ACTIVATIONS or len(params) < len(_ACTIVATIONS[kind]):
        return False
    attrs = {name: float(v) for name, v in zip(_ACTIVATIONS[kind], params, strict=False)}
    graph.nodes.append(gs.Node(kind, names(f"{node.name}_act"), attrs, inputs=[x], outputs=[y]))
    return True


def _fused_conv(node: gs.Node, y: gs.Tensor, graph: gs.Graph, names: _Made) -> bool:
    x, w = node.inputs[0], node.inputs[1]
    b = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2].name else None
    z = node.inputs[3] if len(node.inputs) > 3 and node.inputs[3].name else None
    params = [float(v) for v in node.attrs.get("activation_params", [])]
    kind = _text(node.attrs.get("activation", ""))
    if kind and kind != "Clip" and kind not in _ACTIVATIONS:
        return False
    attrs = {k: v for k, v in node.attrs.items() if k not in ("activation", "activation_params")}
    conv_out = gs.Variable(names(f"{node.name}_conv"), dtype=y.dtype) if z is not None or kind else y
    graph.nodes.append(
        gs.Node("Conv", node.name, attrs, inputs=[x, w, *([b] if b is not None else [])], outputs=[conv_out])
    )
    summed = conv_out
    if z is not None:
        summed = gs.Variable(names(f"{node.name}_sum"), dtype=y.dtype) if kind else y
        graph.nodes.append(gs.Node("Add", names(f"{node.name}_add"), inputs=[conv_out, z], outputs=[summed]))
    if kind:
        _activation(node, params, summed, y, graph, names)
    return True


def _fused_gemm(node: gs.Node, y: gs.Tensor, graph: gs.Graph, names: _Made) -> bool:
    kind = _text(node.attrs.get("activation", ""))
    if kind and kind not in _ACTIVATIONS:  # Clip's bounds: not read here
        return False
    params = [float(node.attrs[k]) for k in ("activation_alpha", "activation_beta") if k in node.attrs]
    attrs = {k: node.attrs[k] for k in ("alpha", "beta", "transA", "transB") if k in node.attrs}
    gemm_out = gs.Variable(names(f"{node.name}_gemm"), dtype=y.dtype) if kind else y
    graph.nodes.append(gs.Node("Gemm", node.name, attrs, inputs=list(node.inputs), outputs=[gemm_out]))
    if kind:
        _activation(node, params, gemm_out, y, graph, names)
    return True


def _transposed(t: gs.Tensor, name: str, graph: gs.Graph, names: _Made) -> gs.Tensor | None:
    """``t`` with its last two axes swapped (a constant's values, else a Transpose node); None when
    its rank is unknown."""
    rank = len(t.shape) if t.shape is not None else None
    if rank is None or rank < 2:
        return None
    perm = [*range(rank - 2), rank - 1, rank - 2]
    if isinstance(t, gs.Constant):  # one transposed copy of a weight that several nodes read
        if id(t) not in names.transposed:
            values = np.ascontiguousarray(np.transpose(t.values, perm))
            names.transposed[id(t)] = gs.Constant(names(f"{t.name}_T"), values)
        return names.transposed[id(t)]
    out = gs.Variable(names(f"{name}_T"), dtype=t.dtype)
    graph.nodes.append(
        gs.Node("Transpose", names(f"{name}_transpose"), {"perm": perm}, inputs=[t], outputs=[out])
    )
    return out


def _fused_matmul(node: gs.Node, y: gs.Tensor, graph: gs.Graph, names: _Made) -> bool:
    if int(node.attrs.get("transBatchA", 0)) or int(node.attrs.get("transBatchB", 0)):
        return False
    a, b = node.inputs[0], node.inputs[1]
    if int(node.attrs.get("transA", 0)):
        a = _transposed(a, f"{node.name}_a", graph, names)
    if int(node.attrs.get("transB", 0)):
        b = _transposed(b, f"{node.name}_b", graph, names)
    if a is None or b is None:
        return False
    alpha = float(node.attrs.get("alpha", 1.0))
    product = y if alpha == 1.0 else gs.Variable(names(f"{node.name}_product"), dtype=y.dtype)
    graph.nodes.append(gs.Node("MatMul", node.name, inputs=[a, b], outputs=[product]))
    if alpha != 1.0:
        scale = gs.Constant(names(f"{node.name}_alpha"), np.array(alpha, dtype=y.dtype or np.float32))
        graph.nodes.append(gs.Node("Mul", names(f"{node.name}_scale"), inputs=[product, scale], outputs=[y]))
    return True


_UNFUSE = {"FusedConv": _fused_conv, "FusedGemm": _fused_gemm, "FusedMatMul": _fused_matmul}


def fused_ops(graph: gs.Graph) -> bool:
    """Whether ``graph`` holds an op :func:`unfuse_runtime_ops` rewrites."""
    return any(n.domain == "com.microsoft" and n.op in _UNFUSE for n in graph.nodes)


def unfuse_runtime_ops(graph: gs.Graph) -> int:
    """Rewrite every FusedConv, FusedGemm and FusedMatMul of ``graph`` as the standard ops it fuses;
    the count rewritten. The caller sorts the graph again (the new nodes are appended)."""
    done, names = 0, _Made(graph)
    for node in [n for n in graph.nodes if n.domain == "com.microsoft" and n.op in _UNFUSE]:
        outputs = list(node.outputs)
        if len(outputs) != 1:
            continue
        node.outputs.clear()  # the standard ops write it now
        if _UNFUSE[node.op](node, outputs[0], graph, names):
            node.inputs.clear()
            graph.nodes.remove(node)
            done += 1
        else:
            node.outputs.extend(outputs)
    return done
