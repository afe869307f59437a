"""Candidates run from the nodes they change on (onnxfold.runtime.suffix): the same outputs as a whole
run, the boundary computed once per group, whole runs where a suffix would not pay."""

from __future__ import annotations

import numpy as np
import pytest

import onnxfold
from onnxfold.api import as_model
from onnxfold.ir.model import to_model_proto
from onnxfold.models import bundled_model
from onnxfold.passes import CanonicalizePass
from onnxfold.pipeline.manager import PassContext
from onnxfold.runtime import suffix as suffix_mod
from onnxfold.runtime.session import measurement_session
from onnxfold.runtime.suffix import SuffixRuns


@pytest.fixture(scope="module")
def source():
    model = as_model(bundled_model("resnet18.onnx"))
    CanonicalizePass().run(model, PassContext())
    feeds = [
        {"input": np.random.default_rng(i).standard_normal((4, 1, 8, 8)).astype(np.float32)} for i in range(2)
    ]
    return model, feeds


def _whole(proto, feeds):
    sess = measurement_session(proto)
    names = [o.name for o in sess.get_outputs()]
    return names, [sess.run(names, f) for f in feeds]


def _served(monkeypatch) -> list:
    """What every SuffixRuns.outputs call returns from now on (None: the candidate ran whole)."""
    served = []
    outputs = SuffixRuns.outputs
    monkeypatch.setattr(SuffixRuns, "outputs", lambda self, c: served.append(r := outputs(self, c)) or r)
    return served


def _scaled(model, weight: str, factor: float):
    """A copy of ``model`` with one weight scaled, as a candidate that changes one group's members."""
    out = model.copy()
    (t,) = [t for t in out.graph.tensors().values() if t.name == weight]
    t.values = (np.asarray(t.values) * np.float32(factor)).astype(np.float32)
    return to_model_proto(out)


def test_a_suffix_gives_the_whole_run_outputs_and_computes_its_boundary_once(source, monkeypatch) -> None:
    model, feeds = source
    names, reference = _whole(to_model_proto(model), feeds)
    runs = SuffixRuns(to_model_proto(model), feeds, names)
    computed = []
    compute = runs._compute
    monkeypatch.setattr(runs, "_compute", lambda bound: computed.append(bound) or compute(bound))
    for factor in (0.5, 1.5):
        cand = _scaled(model, "layer4.1.conv2.weight", factor)
        got = runs.outputs(cand)
        _, want = _whole(cand, feeds)
        assert got is not None
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g[0], w[0], rtol=1e-5, atol=1e-5)
        assert not np.allclose(got[0][0], reference[0][0])  # the change is seen
        assert len(runs.suffix(cand)) < len(cand.graph.node) // 4
    assert len(computed) == 1 and runs.suffix_runs == 2  # one prefix for both candidates


def test_no_change_is_the_reference_and_an_early_change_runs_whole(source) -> None:
    model, feeds = source
    names, reference = _whole(to_model_proto(model), feeds)
    runs = SuffixRuns(to_model_proto(model), feeds, names)
    same = runs.outputs(to_model_proto(model.copy()))
    assert same is not None and all(np.array_equal(a[0], b[0]) for a, b in zip(same, reference, strict=True))
    assert runs.outputs(_scaled(model, "conv1.weight", 0.5)) is None  # the suffix is the whole model
    assert runs.suffix_runs == 0


def test_a_boundary_over_the_budget_runs_whole(source, monkeypatch) -> None:
    model, feeds = source
    names, reference = _whole(to_model_proto(model), feeds)
    monkeypatch.setattr(suffix_mod, "BOUNDARY_BYTES", 16)
    runs = SuffixRuns(to_model_proto(model), feeds, names)
    assert runs.outputs(_scaled(model, "layer4.1.conv2.weight", 0.5)) is None


def test_a_search_judged_on_suffixes_chooses_what_whole_runs_choose(monkeypatch) -> None:
    from onnxfold.models.digits import load_digits_split

    x = load_digits_split()[2][:32]
    kwargs = dict(min_fidelity=0.9, inputs={"input": x}, validate=False)
    served = _served(monkeypatch)
    _, fast = onnxfold.fold(bundled_model("resnet18.onnx"), **kwargs)
    assert sum(r is not None for r in served) >= 10  # most of the judge's candidates ran from a suffix
    served.clear()
    monkeypatch.setattr(suffix_mod, "MAX_SOURCE_BYTES", -1)  # every candidate runs whole
    _, whole = onnxfold.fold(bundled_model("resnet18.onnx"), **kwargs)
    assert not served
    assert (fast.search.chosen.steps, fast.search.chosen.params) == (
        whole.search.chosen.steps,
        whole.search.chosen.params,
    )
    assert fast.search.chosen.fidelity == pytest.approx(whole.search.chosen.fidelity, abs=1e-4)
    for a, b in zip(fast.search.curves, whole.search.curves, strict=True):
        np.testing.assert_allclose(a.fidelity, b.fidelity, atol=1e-4)
    chosen = {p.group.name: p.method for p in fast.plans}
    assert chosen == {p.group.name: p.method for p in whole.plans}


def test_the_sequential_choice_on_suffixes_chooses_what_whole_runs_choose(monkeypatch) -> None:
    """``auto`` with samples chooses group after group on the model rebuilt with the choices before:
    the judge's suffixes are cut against that model, and the choices are those of whole runs."""
    from onnxfold.models.digits import load_digits_split

    x = load_digits_split()[2][:32]
    served = _served(monkeypatch)
    fast, fast_report = onnxfold.fold(
        bundled_model("resnet18.onnx"), 0.5, inputs={"input": x}, validate=False
    )
    assert sum(r is not None for r in served) >= 10
    monkeypatch.setattr(suffix_mod, "MAX_SOURCE_BYTES", -1)
    whole, whole_report = onnxfold.fold(
        bundled_model("resnet18.onnx"), 0.5, inputs={"input": x}, validate=False
    )
    assert [(p.group.name, p.method, p.k) for p in fast_report.plans] == [
        (p.group.name, p.method, p.k) for p in whole_report.plans
    ]
    feeds = [{"input": x}]
    np.testing.assert_allclose(
        _whole(to_model_proto(fast), feeds)[1][0][0],
        _whole(to_model_proto(whole), feeds)[1][0][0],
        rtol=1e-4,
        atol=1e-4,
    )


def test_a_model_with_subgraphs_runs_whole() -> None:
    """A branch of an If may read outer tensors that no input of the If lists: no suffix is cut."""
    from onnx import TensorProto, helper, numpy_helper

    def branch(name: str, scale: float):
        out = helper.make_tensor_value_info(f"{name}_y", TensorProto.FLOAT, None)
        node = helper.make_node("Mul", ["h", f"{name}_s"], [f"{name}_y"])
        init = numpy_helper.from_array(np.array(scale, np.float32), f"{name}_s")
        return helper.make_graph([node], name, [], [out], [init])

    w = numpy_helper.from_array(np.eye(3, dtype=np.float32), "w")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node(
            "If", ["c"], ["y"], name="if", then_branch=branch("a", 2.0), else_branch=branch("b", 3.0)
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    feeds = [{"x": np.ones((2, 3), np.float32), "c": np.array(True)}]
    runs = SuffixRuns(proto, feeds, ["y"])
    assert not runs.usable and runs.outputs(proto) is None


def test_exposed_tensors_are_computed_by_the_nodes_they_depend_on_alone(source) -> None:
    """Measuring activations runs a model whose outputs are the measured tensors: only their
    ancestors are kept (onnxruntime runs every node whatever a run asks for), with the same values."""
    from onnxfold.runtime.activations import _with_outputs

    model, feeds = source
    early = next(n.outputs[0].name for n in model.graph.nodes if n.op == "Relu")
    whole = _with_outputs(model, {early: 1})
    only = _with_outputs(model, {early: 1}, only=True)
    assert [o.name for o in only.graph.output] == [early]
    assert 0 < len(only.graph.node) < len(whole.graph.node) // 4
    a = measurement_session(whole, optimize=False).run([early], feeds[0])[0]
    b = measurement_session(only, optimize=False).run([early], feeds[0])[0]
    np.testing.assert_array_equal(a, b)


def test_a_model_exported_at_batch_1_is_measured_from_its_suffix_run_by_run(monkeypatch) -> None:
    """The search's measurements run a batch-1 model sample by sample; its suffix runs the same runs,
    and the outputs are joined as a whole run joins them."""
    from onnx import TensorProto, helper, numpy_helper

    from onnxfold.search import Evaluator

    w1 = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)

    def build(w2: np.ndarray):
        nodes = [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
            helper.make_node("Relu", ["h"], ["r"], name="relu"),
            helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2"),
        ]
        graph = helper.make_graph(
            nodes,
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
            [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    w2 = np.random.default_rng(1).standard_normal((6, 3)).astype(np.float32)
    source = build(w2)
    candidate = build(w2 * np.float32(0.8) + np.float32(0.1))
    feeds = {"x": np.random.default_rng(2).standard_normal((8, 4)).astype(np.float32)}
    served = _served(monkeypatch)
    fast, _ = Evaluator(source, feeds, "r2")(candidate)
    assert len(served) == 1 and served[0] is not None and len(served[0]) == 8  # eight runs of one sample
    monkeypatch.setattr(suffix_mod, "MAX_SOURCE_BYTES", -1)
    whole, _ = Evaluator(source, feeds, "r2")(candidate)
    assert fast == pytest.approx(whole, abs=1e-6) and fast < 0.99
