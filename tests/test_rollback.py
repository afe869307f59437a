"""Never a broken output (issue 4 item 5): a fold whose rewrite of one group breaks the model is verified
(onnx.checker full check, onnxruntime load + one run with unchanged output shapes) and only that group is
rolled back, reported blocked with a "rollback" reason; the other groups stay folded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from harness import mlp_proto

import onnxfold.folding.apply as folding
from onnxfold.api import run_pipeline
from onnxfold.passes import FoldPass
from onnxfold.runtime.session import make_session


def mlp(path: Path) -> Path:
    """x(N,8) → MatMul W1(8,16) + b1 → Relu → MatMul W2(16,12) + b2 → Relu → MatMul W3(12,4): two foldable groups."""
    onnx.save(mlp_proto(), str(path))
    return path


@pytest.fixture
def break_mm1(monkeypatch):
    """Make the rewrite of group mm1 drop one row of its consumer W2 (16×12, edited on axis 0 only by mm1):
    the next MatMul then gets an input of the wrong width."""
    original = folding.apply_edits

    def broken(values, edits):
        out = original(values, edits)
        if values.shape == (16, 12) and any(e.axis == 0 for e in edits):
            out = out[:-1]
        return out

    monkeypatch.setattr(folding, "apply_edits", broken)


def statuses(plans) -> dict[str, tuple[str, str]]:
    return {p.group.name: (p.status, p.reason) for p in plans}


def test_broken_group_is_rolled_back(tmp_path: Path, break_mm1) -> None:
    src = mlp(tmp_path / "m.onnx")
    out = tmp_path / "out.onnx"
    _, report = run_pipeline(src, [FoldPass(sparsity=0.5)], out)
    status = statuses(report.plans)
    assert status["mm1"][0] == "blocked" and status["mm1"][1].startswith("rollback: "), status
    assert "\n" not in status["mm1"][1]
    assert [r.code for p in report.plans if p.group.name == "mm1" for r in p.reasons] == ["rollback"]
    assert status["mm2"][0] == "folded", status
    onnx.checker.check_model(str(out), full_check=True)
    saved = {t.name: tuple(t.dims) for t in onnx.load(str(out)).graph.initializer}
    assert saved["W1"] == (8, 16) and saved["W2"] == (16, 6) and saved["W3"] == (6, 4)
    sess = make_session(out, providers=["CPUExecutionProvider"])
    (y,) = sess.run(None, {"x": np.ones((3, 8), np.float32)})
    assert y.shape == (3, 4)
    assert "rollback" in report.format()


def test_without_verify_the_broken_rewrite_goes_through(tmp_path: Path, break_mm1) -> None:
    """The control: the same fault with verify=false leaves a graph the checker refuses."""
    src = mlp(tmp_path / "m.onnx")
    model, report = run_pipeline(src, [FoldPass(sparsity=0.5, verify=False)])
    assert {p.status for p in report.plans if p.group.name in ("mm1", "mm2")} == {"folded"}
    with pytest.raises((onnx.checker.ValidationError, onnx.shape_inference.InferenceError)):
        onnx.checker.check_model(model.to_onnx(), full_check=True)


def test_rewrite_that_raises_is_rolled_back(tmp_path: Path, monkeypatch) -> None:
    """A rewrite that raises for one group (here mm2's producer W2 edit on axis 1) is rolled back too."""
    original = folding.apply_edits

    def raising(values, edits):
        if values.shape == (16, 12) and any(e.axis == 1 for e in edits):
            raise ValueError("simulated rewrite bug")
        return original(values, edits)

    monkeypatch.setattr(folding, "apply_edits", raising)
    out = tmp_path / "out.onnx"
    _, report = run_pipeline(mlp(tmp_path / "m.onnx"), [FoldPass(sparsity=0.5)], out)
    status = statuses(report.plans)
    assert status["mm2"][0] == "blocked" and "simulated rewrite bug" in status["mm2"][1]
    assert status["mm1"][0] == "folded"
    onnx.checker.check_model(str(out), full_check=True)


def test_healthy_fold_is_unchanged_by_verify(tmp_path: Path) -> None:
    src = mlp(tmp_path / "m.onnx")
    on, report = run_pipeline(src, [FoldPass(sparsity=0.5)])
    off, _ = run_pipeline(src, [FoldPass(sparsity=0.5, verify=False)])
    assert all(p.status != "blocked" or not p.reason.startswith("rollback") for p in report.plans)
    assert on.to_onnx().SerializeToString() == off.to_onnx().SerializeToString()


def test_verify_option_is_documented() -> None:
    opt = {o.name: o for o in FoldPass.options}["verify"]
    assert opt.default is True and "roll" in opt.help and "2 GB" in opt.help


@pytest.mark.parametrize("method", ["fold", "l2", "auto"])
def test_a_group_whose_fold_cannot_be_computed_is_left_whole(
    tmp_path: Path, monkeypatch, method: str
) -> None:
    """Computing one group's fold raises (its features here, a depthwise Conv with a multiplier in a
    real case: "cannot reshape array of size 567 into shape (32,newaxis)" ended the whole fold): that
    group is reported blocked with the error and the other still folds, whatever the method."""
    import onnxfold.folding.assign as assign

    original = assign.group_features

    def raising(group, *args, **kwargs):
        if group.name == "mm2":
            raise ValueError("simulated planning bug")
        return original(group, *args, **kwargs)

    monkeypatch.setattr(assign, "group_features", raising)
    monkeypatch.setattr(folding, "group_features", raising)
    out = tmp_path / "out.onnx"
    _, report = run_pipeline(mlp(tmp_path / "m.onnx"), [FoldPass(sparsity=0.5, method=method)], out)
    status = statuses(report.plans)
    assert status["mm2"][0] == "blocked" and "simulated planning bug" in status["mm2"][1], status
    assert [r.code for p in report.plans if p.group.name == "mm2" for r in p.reasons] == ["rollback"]
    assert status["mm1"][0] == "folded", status
    onnx.checker.check_model(str(out), full_check=True)
    saved = {t.name: tuple(t.dims) for t in onnx.load(str(out)).graph.initializer}
    assert saved["W1"] == (8, 8) and saved["W2"] == (8, 12), saved


def test_a_rewritten_graph_that_fails_on_samples_the_original_runs_is_called_a_bug(
    tmp_path: Path, monkeypatch
):
    """PP-OCRv2's recogniser: canonicalize cut a tensor off, and the fold's measurement on the user's
    own samples then said "the model does not run on the given samples ...; give samples of a shape
    the model takes", while the original read them fine."""
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    from onnxfold.errors import PipelineError
    from onnxfold.folding.moments import ActivationStats

    def failing(*args, **kwargs):
        raise Fail("Node input 'Concat_10' is not a graph input, initializer, or output of a previous node")

    monkeypatch.setattr(ActivationStats, "measure", failing)
    samples = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    with pytest.raises(PipelineError) as caught:
        run_pipeline(
            mlp(tmp_path / "m.onnx"),
            [FoldPass(sparsity=0.5, method="auto")],
            tmp_path / "out.onnx",
            inputs={"x": samples},
        )
    message = str(caught.value)
    assert "the original model runs on the given samples but onnxfold's rewritten graph does not" in message
    assert "Concat_10" in message and "give samples of" not in message
    assert not (tmp_path / "out.onnx").exists()


def test_a_search_whose_every_candidate_fails_to_run_says_it_is_a_bug(tmp_path: Path, monkeypatch):
    """The same recogniser through the data-free default: "no candidate reaches fidelity 0.99: the best
    reached 0.0000 at 0.0% fewer parameters ... (lower --min-fidelity, or --force to write the best
    one)", advice that could not help when not even the unfolded model ran."""
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    import onnxfold.search.evaluate as evaluate
    from onnxfold.errors import PipelineError
    from onnxfold.passes import CanonicalizePass, SearchPass

    def failing(self, candidate):
        raise Fail("Node input 'Concat_10' is not a graph input, initializer, or output of a previous node")

    monkeypatch.setattr(evaluate.Evaluator, "_suffix_run", failing)
    with pytest.raises(PipelineError) as caught:
        run_pipeline(
            mlp(tmp_path / "m.onnx"),
            [CanonicalizePass(), SearchPass(min_fidelity=0.99), FoldPass(method="fold")],
            tmp_path / "out.onnx",
        )
    message = str(caught.value)
    assert message.startswith("search: onnxfold's rewritten graph does not run where the original does"), (
        message
    )
    assert "Concat_10" in message and "--force" not in message
    assert not (tmp_path / "out.onnx").exists()


def test_an_output_whose_length_the_values_decide_may_change_length(tmp_path: Path) -> None:
    """SLANet's table decoder (a Loop that stops at its end token) wrote 48 steps for 58 on noise after
    a fold, and 30 of its 52 groups were rolled back as broken rewrites. An output behind such an op
    need only keep its rank; a static dim that changes is still a broken rewrite."""
    from onnx import TensorProto, helper

    from onnxfold.folding.verify import decided_lengths

    proto = mlp_proto()
    y = proto.graph.output[0].name
    proto.graph.node.extend(
        [
            helper.make_node("Mul", [y, "hundred"], ["fast"]),
            helper.make_node("Sin", ["fast"], ["wave"]),  # any change of y flips these decisions
            helper.make_node("Greater", ["wave", "zero"], ["positive"]),
            helper.make_node("NonZero", ["positive"], ["where"]),
        ]
    )
    proto.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros((), np.float32), "zero"))
    proto.graph.initializer.append(onnx.numpy_helper.from_array(np.array(100.0, np.float32), "hundred"))
    proto.graph.output.append(helper.make_tensor_value_info("where", TensorProto.INT64, [2, "K"]))
    assert decided_lengths(proto) == {"where"}
    counts = set()
    for seed in range(6):  # a fold that moves the decisions: where's length changes on verify's inputs
        model, report = run_pipeline(proto, [FoldPass(sparsity=0.5, seed=seed, method="fold")])
        assert not [p for p in report.plans if "rollback" in p.reason], report.plans
        x = np.random.default_rng(0).standard_normal((1, 8)).astype(np.float32)
        counts.add(make_session(model.to_onnx().SerializeToString()).run(["where"], {"x": x})[0].shape[1])
    before = make_session(proto.SerializeToString()).run(["where"], {"x": x})[0].shape[1]
    assert counts - {before}  # some fold changed the length, and kept its groups
