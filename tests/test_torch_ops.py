"""Every op (and attribute variant) of the torch executor against onnxruntime on one-node graphs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from onnxfold.repair.torch_graph import TORCH_OPS, TorchGraph

RNG = np.random.default_rng(0)


def _x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _i(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def _f(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def case(op, feeds, consts=None, attrs=None, n_out=1, opset=17, id=None, order=None):
    """A one-node graph: ``feeds`` are graph inputs, ``consts`` initializers (None: an omitted input)."""
    consts = consts or {}
    names = list(feeds) + list(consts)
    inputs = [n if (n in feeds or consts[n] is not None) else "" for n in names]
    while inputs and inputs[-1] == "":
        inputs.pop()
    inputs = order or inputs
    outs = [f"y{k}" for k in range(n_out)]
    node = helper.make_node(op, inputs, outs, name="n", **(attrs or {}))
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for n, v in feeds.items()
        ],
        [onnx.ValueInfoProto(name=o) for o in outs],
        [numpy_helper.from_array(v, n) for n, v in consts.items() if v is not None],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return pytest.param(model, feeds, id=id or op)


CASES = [
    case(
        "Slice",
        {"x": _x(2, 5, 7)},
        {"s": _i(1, -5), "e": _i(4, 100), "a": _i(1, 2), "st": _i(1, 2)},
        id="slice",
    ),
    case(
        "Slice",
        {"x": _x(2, 5, 7)},
        {"s": _i(-1), "e": _i(-100), "a": _i(2), "st": _i(-2)},
        id="slice-neg-step",
    ),
    case("Slice", {"x": _x(2, 5, 7)}, {"s": _i(0, 1), "e": _i(2, 3)}, id="slice-no-axes"),
    case(
        "Slice", {"x": _x(4, 6)}, attrs={"starts": [1], "ends": [3], "axes": [1]}, opset=9, id="slice-opset9"
    ),
    case("Pad", {"x": _x(1, 2, 4, 5)}, {"p": _i(0, 0, 1, 2, 0, 0, 2, 1), "v": _f(1.5)}, id="pad-constant"),
    case("Pad", {"x": _x(1, 2, 4, 5)}, {"p": _i(0, 0, 1, -1, 0, 0, 2, 1)}, id="pad-constant-crop"),
    case(
        "Pad",
        {"x": _x(1, 2, 4, 5)},
        {"p": _i(0, 0, 2, 1, 0, 0, 1, 3)},
        attrs={"mode": "reflect"},
        id="pad-reflect",
    ),
    case(
        "Pad", {"x": _x(1, 2, 4, 5)}, {"p": _i(0, 0, 2, 1, 0, 0, 1, 3)}, attrs={"mode": "edge"}, id="pad-edge"
    ),
    case(
        "Pad",
        {"x": _x(1, 2, 4, 5)},
        {"p": _i(1, 2, 2, 1), "v": None, "a": _i(2, -1)},
        opset=18,
        id="pad-axes",
    ),
    case(
        "Pad",
        {"x": _x(2, 3, 4)},
        attrs={"pads": [0, 1, 0, 0, 2, 1], "mode": "edge"},
        opset=10,
        id="pad-opset10",
    ),
    case("Split", {"x": _x(2, 7, 3)}, {"s": _i(2, 5)}, attrs={"axis": 1}, n_out=2, id="split-sizes"),
    case("Split", {"x": _x(2, 6, 3)}, attrs={"axis": 1}, n_out=3, id="split-equal"),
    case(
        "Split",
        {"x": _x(2, 7, 3)},
        attrs={"axis": 1, "num_outputs": 3},
        n_out=3,
        opset=18,
        id="split-num-outputs",
    ),
    case("Split", {"x": _x(2, 7, 3)}, attrs={"axis": 1, "split": [3, 4]}, n_out=2, opset=11, id="split-attr"),
    case("Concat", {"x": _x(2, 3, 4), "z": _x(2, 5, 4)}, attrs={"axis": -2}),
    case(
        "ConvTranspose",
        {"x": _x(1, 4, 5, 6)},
        {"w": _x(4, 3, 3, 3), "b": _x(3)},
        attrs={"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]},
        id="convtranspose",
    ),
    case(
        "ConvTranspose",
        {"x": _x(1, 4, 5, 6)},
        {"w": _x(4, 2, 2, 2)},
        attrs={"strides": [2, 2], "group": 2},
        id="convtranspose-group",
    ),
    case(
        "ConvTranspose",
        {"x": _x(1, 2, 5, 6)},
        {"w": _x(2, 3, 3, 3)},
        attrs={"strides": [2, 2], "pads": [0, 1, 2, 0], "dilations": [1, 2]},
        id="convtranspose-asym",
    ),
    case(
        "ConvTranspose",
        {"x": _x(1, 2, 5, 6)},
        {"w": _x(2, 3, 3, 3)},
        attrs={"strides": [2, 2], "output_shape": [10, 12]},
        id="convtranspose-output-shape",
    ),
    case(
        "ConvTranspose",
        {"x": _x(1, 2, 5)},
        {"w": _x(2, 3, 4)},
        attrs={"strides": [3], "auto_pad": "SAME_UPPER"},
        id="convtranspose-same",
    ),
    case(
        "Conv",
        {"x": _x(1, 3, 7, 8)},
        {"w": _x(4, 3, 3, 3)},
        attrs={"strides": [2, 2], "auto_pad": "SAME_UPPER"},
        id="conv-same-upper",
    ),
    case(
        "Conv",
        {"x": _x(1, 3, 7, 8)},
        {"w": _x(4, 3, 3, 3), "b": _x(4)},
        attrs={"pads": [0, 1, 2, 1]},
        id="conv-asym",
    ),
    case("Max", {"x": _x(2, 3), "z": _x(3), "u": _x(1, 1)}),
    case("Min", {"x": _x(2, 3), "z": _x(3)}),
    case("Sum", {"x": _x(2, 3), "z": _x(3)}),
    case("Mean", {"x": _x(2, 3), "z": _x(3)}),
    case("HardSigmoid", {"x": _x(3, 4) * 4}, attrs={"alpha": 1 / 6, "beta": 0.5}),
    case("HardSwish", {"x": _x(3, 4) * 4}),
    case("Reshape", {"x": _x(2, 3, 4)}, {"s": _i(0, -1)}),
    case("Reshape", {"x": _x(2, 3, 4)}, {"s": _i(4, 0, 2)}, attrs={"allowzero": 0}, id="reshape-zero"),
    case("Transpose", {"x": _x(2, 3, 4)}, attrs={"perm": [2, 0, 1]}),
    case("Transpose", {"x": _x(2, 3, 4)}, id="transpose-default"),
    case("Flatten", {"x": _x(2, 3, 4, 5)}, attrs={"axis": 2}),
    case("Flatten", {"x": _x(2, 3, 4, 5)}, attrs={"axis": -1}, id="flatten-neg"),
    case("Squeeze", {"x": _x(2, 1, 4, 1)}, {"a": _i(-1)}),
    case("Squeeze", {"x": _x(2, 1, 4, 1)}, id="squeeze-all"),
    case("Squeeze", {"x": _x(2, 1, 4, 1)}, attrs={"axes": [1]}, opset=11, id="squeeze-attr"),
    case("Unsqueeze", {"x": _x(2, 4)}, {"a": _i(0, -1)}),
    case("Unsqueeze", {"x": _x(2, 4)}, attrs={"axes": [1]}, opset=11, id="unsqueeze-attr"),
    case(
        "ReduceMean",
        {"x": _x(2, 3, 4, 5)},
        attrs={"axes": [2, 3], "keepdims": 1},
        opset=13,
        id="reducemean-attr",
    ),
    case(
        "ReduceMean",
        {"x": _x(2, 3, 4, 5)},
        {"a": _i(-1, 1)},
        attrs={"keepdims": 0},
        opset=18,
        id="reducemean-input",
    ),
    case("ReduceMean", {"x": _x(2, 3, 4)}, opset=18, id="reducemean-all"),
    case("ReduceSum", {"x": _x(2, 3, 4)}, {"a": _i(1)}, opset=13),
    case("ReduceMax", {"x": _x(2, 3, 4)}, attrs={"axes": [0], "keepdims": 0}, opset=13),
    case("ReduceMin", {"x": _x(2, 3, 4)}, attrs={"axes": [2]}, opset=13),
    case("ReduceL2", {"x": _x(2, 3, 4)}, attrs={"axes": [2]}, opset=13),
    case(
        "Resize",
        {"x": _x(1, 2, 4, 5)},
        {"r": None, "s": _f(1, 1, 2, 2)},
        attrs={"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"},
        id="resize-nearest-x2",
    ),
    case(
        "Resize",
        {"x": _x(1, 2, 4, 5)},
        {"r": None, "s": _f(1, 1, 1.5, 0.6)},
        attrs={"mode": "nearest"},
        id="resize-nearest-half-pixel",
    ),
    case(
        "Resize",
        {"x": _x(1, 2, 4, 5)},
        {"r": None, "s": None, "z": _i(1, 2, 7, 9)},
        attrs={
            "mode": "nearest",
            "coordinate_transformation_mode": "align_corners",
            "nearest_mode": "round_prefer_ceil",
        },
        id="resize-nearest-sizes",
    ),
    case(
        "Resize",
        {"x": _x(1, 2, 4, 5)},
        {"r": None, "s": _f(1, 1, 2, 3)},
        attrs={
            "mode": "nearest",
            "coordinate_transformation_mode": "pytorch_half_pixel",
            "nearest_mode": "ceil",
        },
        id="resize-nearest-ceil",
    ),
    case(
        "Resize",
        {"x": _x(1, 2, 4, 5)},
        {"r": None, "s": _f(1, 1, 2, 2)},
        attrs={"mode": "linear"},
        id="resize-linear-half-pixel",
    ),
    case(
        "Resize",
        {"x": _x(1, 2, 4, 5)},
        {"r": None, "s": _f(1, 1, 2.5, 0.5)},
        attrs={"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"},
        id="resize-linear-pytorch",
    ),
    case(
        "Resize",
        {"x": _x(1, 2, 4, 5)},
        {"r": None, "s": None, "z": _i(1, 2, 8, 3)},
        attrs={"mode": "linear", "coordinate_transformation_mode": "align_corners"},
        id="resize-linear-align",
    ),
    case(
        "Resize",
        {"x": _x(1, 2, 4, 5)},
        {"r": None, "s": _f(1, 1, 2, 2)},
        attrs={"mode": "linear", "coordinate_transformation_mode": "asymmetric"},
        id="resize-linear-asym",
    ),
    case(
        "Resize",
        {"x": _x(1, 2, 4, 5)},
        {"r": None, "s": None, "z": _i(6, 10)},
        attrs={"mode": "linear", "axes": [2, 3]},
        opset=18,
        id="resize-axes",
    ),
    case(
        "Resize",
        {"x": _x(1, 2, 4, 5)},
        {"s": _f(1, 1, 2, 2)},
        attrs={"mode": "nearest"},
        opset=10,
        id="resize-opset10",
    ),
    case(
        "Upsample",
        {"x": _x(1, 2, 3, 4)},
        {"s": _f(1, 1, 2, 2)},
        attrs={"mode": "nearest"},
        opset=9,
        id="upsample-nearest",
    ),
    case(
        "Upsample",
        {"x": _x(1, 2, 3, 4)},
        {"s": _f(1, 1, 2, 3)},
        attrs={"mode": "linear"},
        opset=9,
        id="upsample-linear",
    ),
    case(
        "MaxPool",
        {"x": _x(1, 2, 7, 7)},
        attrs={"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
        id="maxpool-ceil",
    ),
    case(
        "MaxPool",
        {"x": _x(1, 2, 7, 8)},
        attrs={"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
        id="maxpool-pads",
    ),
    case(
        "MaxPool",
        {"x": _x(1, 2, 7, 8)},
        attrs={"kernel_shape": [2, 2], "strides": [1, 1], "pads": [0, 0, 1, 1]},
        id="maxpool-asym",
    ),
    case(
        "MaxPool",
        {"x": _x(1, 2, 8, 8)},
        attrs={"kernel_shape": [5, 5], "strides": [1, 1], "pads": [2, 2, 2, 2]},
        id="maxpool-sppf",
    ),
    case(
        "AveragePool",
        {"x": _x(1, 2, 7, 8)},
        attrs={"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
        id="avgpool-pads",
    ),
    case(
        "AveragePool",
        {"x": _x(1, 2, 7, 8)},
        attrs={"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1},
        id="avgpool-include",
    ),
    case(
        "AveragePool",
        {"x": _x(1, 2, 8, 8)},
        attrs={"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1},
        id="avgpool-ceil",
    ),
    case("GlobalAveragePool", {"x": _x(2, 3, 4, 5)}),
    case("GlobalMaxPool", {"x": _x(2, 3, 4, 5)}),
    case("Sigmoid", {"x": _x(3, 4)}),
    case("Mul", {"x": _x(2, 3, 4, 5), "z": _x(3, 1, 1)}),
    case("Add", {"x": _x(2, 3, 4, 5), "z": _x(5)}),
    case("Sub", {"x": _x(2, 3), "z": _x(2, 1)}),
    case("Div", {"x": _x(2, 3), "z": np.abs(_x(3)) + 0.5}),
    case("Div", {}, {"x": _i(7, -7, 9), "z": _i(2, 2, -4)}, id="div-int"),
    case("Pow", {"x": np.abs(_x(2, 3))}, {"z": _f(2.0)}),
    case("Clip", {"x": _x(3, 4) * 3}, {"lo": _f(0.0), "hi": _f(6.0)}, id="clip-inputs"),
    case("Clip", {"x": _x(3, 4) * 3}, {"lo": None, "hi": _f(1.0)}, id="clip-hi-only"),
    case("Clip", {"x": _x(3, 4) * 3}, attrs={"min": -1.0, "max": 1.0}, opset=6, id="clip-attrs"),
    case("Relu", {"x": _x(3, 4)}),
    case("LeakyRelu", {"x": _x(3, 4)}, attrs={"alpha": 0.1}),
    case("PRelu", {"x": _x(2, 3, 4)}, {"s": _x(3, 1)}),
    case("Elu", {"x": _x(3, 4)}),
    case("Selu", {"x": _x(3, 4)}),
    case("Softplus", {"x": _x(3, 4)}),
    case("Mish", {"x": _x(3, 4)}, opset=18),
    case("Tanh", {"x": _x(3, 4)}),
    case("Erf", {"x": _x(3, 4)}),
    case("Gelu", {"x": _x(3, 4)}, opset=20),
    case("Gelu", {"x": _x(3, 4)}, attrs={"approximate": "tanh"}, opset=20, id="gelu-tanh"),
    case("Softmax", {"x": _x(2, 3, 4)}, attrs={"axis": 1}),
    case("Softmax", {"x": _x(2, 3, 4)}, opset=11, id="softmax-opset11"),
    case("LogSoftmax", {"x": _x(2, 3, 4)}),
    case("Identity", {"x": _x(3)}),
    case("Dropout", {"x": _x(3)}),
    case("Sqrt", {"x": np.abs(_x(3)) + 0.1}),
    case("Reciprocal", {"x": np.abs(_x(3)) + 0.1}),
    case("Neg", {"x": _x(3)}),
    case("Exp", {"x": _x(3)}),
    case("Log", {"x": np.abs(_x(3)) + 0.1}),
    case("Abs", {"x": _x(3)}),
    case("Floor", {"x": _x(3) * 3}),
    case("Ceil", {"x": _x(3) * 3}),
    case("Round", {"x": _f(0.5, 1.5, -2.5, 0.3)}),
    case(
        "Where",
        {"x": _x(3, 4), "z": _x(4)},
        {"c": RNG.random((3, 4)) > 0.5},
        order=["c", "x", "z"],
        id="where",
    ),
    case("Equal", {}, {"x": _i(1, 2, 3), "z": _i(1, 0, 3)}),
    case("Greater", {"x": _x(3), "z": _x(3)}),
    case("Less", {"x": _x(3), "z": _x(3)}),
    case("Not", {}, {"x": np.array([True, False])}),
    case("Cast", {"x": _x(3) * 5}, attrs={"to": TensorProto.INT64}, id="cast-int"),
    case("Cast", {}, {"x": _i(1, 2)}, attrs={"to": TensorProto.FLOAT}, id="cast-float"),
    case("Cast", {"x": _x(3)}, attrs={"to": TensorProto.BOOL}, id="cast-bool"),
    case("Shape", {"x": _x(2, 3, 4)}),
    case("Shape", {"x": _x(2, 3, 4)}, attrs={"start": 1, "end": -1}, opset=15, id="shape-slice"),
    case("Size", {"x": _x(2, 3, 4)}),
    case("Gather", {"x": _x(4, 5)}, {"i": _i(3, -1, 0)}, attrs={"axis": 1}),
    case("Gather", {}, {"x": _i(2, 3, 4), "i": np.array(1, np.int64)}, id="gather-scalar"),
    case("ConstantOfShape", {}, {"s": _i(2, 3)}, attrs={"value": numpy_helper.from_array(_f(1.5))}),
    case("ConstantOfShape", {}, {"s": _i(2)}, id="constantofshape-default"),
    case("Range", {}, {"a": np.array(1, np.int64), "b": np.array(9, np.int64), "c": np.array(3, np.int64)}),
    case(
        "Range",
        {},
        {"a": np.array(0.5, np.float32), "b": np.array(2, np.float32), "c": np.array(0.25, np.float32)},
        id="range-float",
    ),
    case("Expand", {"x": _x(3, 1)}, {"s": _i(2, 1, 4)}),
    case("Tile", {"x": _x(2, 3)}, {"r": _i(2, 1)}),
    case("ArgMax", {"x": _x(3, 4)}, attrs={"axis": 1, "keepdims": 0}),
    case("DepthToSpace", {"x": _x(1, 8, 2, 3)}, attrs={"blocksize": 2}),
    case("DepthToSpace", {"x": _x(1, 8, 2, 3)}, attrs={"blocksize": 2, "mode": "CRD"}, id="depthtospace-crd"),
    case("SpaceToDepth", {"x": _x(1, 2, 4, 6)}, attrs={"blocksize": 2}),
    case("Einsum", {"x": _x(2, 3, 4), "z": _x(2, 4, 5)}, attrs={"equation": "bij,bjk->bik"}),
    case("MatMul", {"x": _x(2, 3, 4), "z": _x(4, 5)}),
    case(
        "Gemm", {"x": _x(3, 4)}, {"w": _x(5, 4), "b": _x(5)}, attrs={"transB": 1, "alpha": 0.5, "beta": 2.0}
    ),
    case("InstanceNormalization", {"x": _x(2, 3, 4, 5)}, {"s": _x(3), "b": _x(3)}),
    case("LayerNormalization", {"x": _x(2, 3, 4)}, {"s": _x(4), "b": _x(4)}),
    case(
        "BatchNormalization",
        {"x": _x(2, 3, 4)},
        {"s": _x(3), "b": _x(3), "m": _x(3), "v": np.abs(_x(3)) + 0.1},
    ),
]


@pytest.mark.parametrize(("model", "feeds"), CASES)
def test_op_matches_onnxruntime(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, feeds)
    got = TorchGraph(model).run({k: torch.from_numpy(v) for k, v in feeds.items()})
    for r, (name, g) in zip(ref, got.items(), strict=True):
        g = g.detach().cpu().numpy()
        assert g.shape == r.shape, name
        if r.dtype.kind == "f":
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(g, r.astype(g.dtype) if r.dtype != bool else r)


def test_every_op_in_the_table_is_tested():
    tested = {p.values[0].graph.node[0].op_type for p in CASES}
    assert set(TORCH_OPS) - tested <= {
        "Xor",
        "And",
        "Or",
        "LessOrEqual",
        "GreaterOrEqual",
        "Sign",
        "Sin",
        "Cos",
        "ReduceProd",
        "ReduceL1",
        "ReduceSumSquare",
        "ArgMin",
        "Softsign",
    }
