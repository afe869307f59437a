"""An integer input shaped like the token ids that indexes no table is their attention mask, whatever
its name: drawn as 1s, not as small random integers. A legacy export named unidic-lite-imitator's
ALBERT mask ``onnx::Unsqueeze_1``; drawn in [0, 4) it turned attention off, every position read
class 0 in the original and in any fold, and a fold that kept 57% of the tags validated as exact."""

from __future__ import annotations

import numpy as np
from harness import masked_tokens_proto
from onnx import TensorProto, helper

from onnxfold.api import as_model
from onnxfold.folding.samples import token_draws
from onnxfold.runtime.inputs import make_inputs
from onnxfold.runtime.session import make_session


def _renamed(proto, old: str, new: str):
    for vi in proto.graph.input:
        if vi.name == old:
            vi.name = new
    for node in proto.graph.node:
        node.input[:] = [new if i == old else i for i in node.input]
    return proto


def test_an_unnamed_mask_shaped_like_the_ids_is_drawn_as_ones() -> None:
    proto = _renamed(masked_tokens_proto(), "attention_mask", "onnx::Unsqueeze_1")
    g = proto.graph
    # two more integer inputs that index nothing: positions of the ids' shape, and a [batch] count
    g.input.extend(
        [
            helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("count", TensorProto.INT64, ["batch"]),
        ]
    )
    g.node.extend(
        [
            helper.make_node("Cast", ["position_ids"], ["pf"], to=TensorProto.FLOAT),
            helper.make_node("Cast", ["count"], ["cf"], to=TensorProto.FLOAT),
            helper.make_node("ReduceSum", ["pf"], ["ps"], keepdims=0),
            helper.make_node("Add", ["ps", "cf"], ["extra"]),
        ]
    )
    g.output.extend([helper.make_tensor_value_info("extra", TensorProto.FLOAT, ["batch"])])
    feed = make_inputs(make_session(proto), batch=3, id_draws=token_draws(as_model(proto)))
    assert feed["input_ids"].shape == (3, 16) and feed["input_ids"].max() < 50  # drawn from the table
    assert np.array_equal(feed["onnx::Unsqueeze_1"], np.ones((3, 16), np.int64))
    assert np.array_equal(feed["position_ids"], np.broadcast_to(np.arange(16), (3, 16)))  # by its name
    assert feed["count"].shape == (3,) and set(np.unique(feed["count"])) <= {0, 1, 2, 3}  # not the ids' shape
    # without a token table nothing is shaped like ids: the same input stays a small integer
    plain = make_inputs(make_session(proto), batch=3, seed=1)
    assert not np.array_equal(plain["onnx::Unsqueeze_1"], np.ones((3, 16), np.int64))
