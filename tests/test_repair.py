"""Repair modes (issue: repair modes and baselines): the math, tiny graphs with BN kept and fused, the
exact-duplicate oracles under every mode, and the variance collapse on trained zoo models (docs/method.md §2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import onnxfold
from onnxfold.cli.commands import main
from onnxfold.ir.model import to_model_proto
from onnxfold.passes import REGISTRY, CanonicalizePass, FoldPass, RepairPass
from onnxfold.pipeline.manager import PassError, PipelineError, parse_pipeline
from onnxfold.repair.stats import (
    affine_to_goal,
    ar_factors,
    bn_normalized_stats,
    bn_stats_for_goal,
    channel_norms,
    mean_cosine,
    norm_factors,
    norm_factors_along,
    normalized_pair,
)
from onnxfold.report.stats import model_stats
from onnxfold.runtime.session import make_session

ZOO = Path(__file__).resolve().parents[1] / "models" / "zoo"
EPS = 1e-5


# --------------------------------------------------------------------------- the math


def test_mean_cosine_and_ar_factor() -> None:
    rows = np.array([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0], [-1.0, 0.0], [1.0, 0.0]])
    labels = np.array([0, 0, 1, 2, 2])
    e = mean_cosine(rows, labels, 3)
    np.testing.assert_allclose(e, [1 / np.sqrt(2), 1.0, -1.0])
    s = ar_factors(e, np.array([2, 1, 2]))
    # N=2, E=1/√2: sqrt(2 / (1 + 1/√2)); a singleton is exactly 1; E=−1 is clipped to 0: sqrt(2)
    np.testing.assert_allclose(s, [np.sqrt(2 / (1 + 1 / np.sqrt(2))), 1.0, np.sqrt(2)])
    assert s[1] == 1.0
    # duplicates: correlation 1, factor exactly 1; dropped channels (−1) are ignored
    dup = mean_cosine(np.array([[2.0, 1.0], [2.0, 1.0], [5.0, 5.0]]), np.array([0, 0, -1]), 1)
    assert ar_factors(dup, np.array([2]))[0] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_norm_factors_along_an_axis_equal_the_row_form_bit_for_bit(dtype) -> None:
    """The layout-preserving form (used on 7B MLP weights whose channels are the last axis) gives exactly
    the factors of the (n, d) row form, for every axis, cluster sizes from 1 to 20 and dropped channels."""
    from onnxfold.analysis.group_producers import rows

    rng = np.random.default_rng(7)
    for shape, axis in [((600, 9), 0), ((5, 600), 1), ((3, 600, 4), 1), ((2, 3, 600), 2)]:
        n = shape[axis]
        for k, drop in [(590, False), (300, True), (40, False), (1, False)]:
            labels = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
            rng.shuffle(labels)
            if drop:  # a few dropped channels, every cluster still non-empty
                spare = np.nonzero(np.bincount(labels, minlength=k)[labels] > 1)[0][:5]
                labels[spare] = -1
            values = (rng.standard_normal(shape) * rng.choice([1e-3, 1.0, 50.0], size=shape)).astype(dtype)
            want = norm_factors(rows(values, axis), labels, k)
            assert np.array_equal(norm_factors_along(values, axis, labels, k), want), (shape, axis, k)
            assert np.array_equal(channel_norms(values, axis), np.linalg.norm(rows(values, axis), axis=1))


def test_norm_factor_is_mean_norm_over_merged_norm() -> None:
    rows = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [1.0, 0.0], [7.0, 7.0]])
    f = norm_factors(rows, np.array([0, 0, 1, 1, 2]), 3)
    # orthogonal unit rows: mean norm 1, merged norm 1/√2 → √2; parallel rows: 1.5/1.5 → 1; singleton 1
    np.testing.assert_allclose(f, [np.sqrt(2), 1.0, 1.0])
    # anti-parallel rows cancel: capped at sqrt(N)
    assert norm_factors(np.array([[1.0, 0.0], [-1.0, 0.0]]), np.array([0, 0]), 1)[0] == pytest.approx(
        np.sqrt(2)
    )


def test_normalized_pair_computes_the_same_function() -> None:
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((4, 3)), rng.standard_normal(4)
    mean, var = rng.standard_normal(4), rng.uniform(0.5, 2.0, 4)
    gamma, beta = rng.uniform(0.5, 1.5, 4), rng.standard_normal(4)
    x = rng.standard_normal((10, 3))

    def bn(z, m, v):
        return gamma * (z - m) / np.sqrt(v + EPS) + beta

    mask = np.array([True, True, False, True])
    w1, b1, m1, v1 = normalized_pair(w, 0, b, mean, var, EPS, mask)
    np.testing.assert_allclose(bn(x @ w1.T + b1, m1, v1), bn(x @ w.T + b, mean, var), rtol=1e-12, atol=1e-12)
    # unmasked channel untouched, bit for bit; masked ones: μ/σ and a unit divisor
    assert np.array_equal(w1[2], w[2]) and b1[2] == b[2] and m1[2] == mean[2] and v1[2] == var[2]
    np.testing.assert_allclose(m1[mask], mean[mask] / np.sqrt(var[mask] + EPS))
    np.testing.assert_allclose(v1[mask] + EPS, 1.0)
    # no bias: none is added, the shift −μ/σ stays in the BN mean
    w2, b2, m2, v2 = normalized_pair(w, 0, None, mean, var, EPS, mask)
    assert b2 is None
    np.testing.assert_allclose(bn(x @ w2.T, m2, v2), bn(x @ w.T, mean, var), rtol=1e-12, atol=1e-12)


def test_goal_statistics_are_reached() -> None:
    rng = np.random.default_rng(1)
    z = rng.standard_normal((2000, 3)) * [0.5, 2.0, 3.0] + [1.0, -2.0, 0.0]
    m_hat, v_hat = z.mean(0), z.var(0)
    goal_std, goal_mean = np.array([1.0, 0.7, 1.3]), np.array([0.0, 0.2, -0.5])
    mu, var = bn_stats_for_goal(m_hat, v_hat, goal_std, goal_mean, EPS)
    normalised = (z - mu) / np.sqrt(var + EPS)
    np.testing.assert_allclose(normalised.std(0), goal_std, rtol=1e-10)
    np.testing.assert_allclose(normalised.mean(0), goal_mean, atol=1e-10)
    a, b = affine_to_goal(m_hat, np.sqrt(v_hat), goal_mean=goal_mean, goal_std=goal_std)
    np.testing.assert_allclose((a * z + b).std(0), goal_std, rtol=1e-10)
    np.testing.assert_allclose((a * z + b).mean(0), goal_mean, atol=1e-10)
    # a channel whose BN statistics are its data statistics has goal (1, 0) in normalised units
    std, mean = bn_normalized_stats(m_hat, v_hat, m_hat, v_hat - EPS, EPS)
    np.testing.assert_allclose(std, 1.0)
    np.testing.assert_allclose(mean, 0.0, atol=1e-12)


# --------------------------------------------------------------------------- tiny graphs


def tiny_model(
    bn: bool, seed: int = 0, bias: bool | None = None
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x[N,2,4,4] → conv1 (4 out, 3×3) → [bn1] → Relu → conv2 (3 out, 1×1) → GAP → Flatten → y[N,3].

    conv1's channels come in two near-duplicate pairs {0,1}, {2,3} (so k-means at k=2 pairs them), with
    different scales and BN statistics per channel so that every repair has something to do."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((2, 2, 3, 3))
    w1 = np.concatenate(
        [
            base[[0]],
            base[[0]] * 1.3 + 0.15 * rng.standard_normal((1, 2, 3, 3)),
            base[[1]],
            base[[1]] * 0.8 + 0.15 * rng.standard_normal((1, 2, 3, 3)),
        ]
    ).astype(np.float32)
    cols = rng.standard_normal((3, 2, 1, 1))
    w2 = np.concatenate([cols[:, [0]], cols[:, [0]], cols[:, [1]], cols[:, [1]]], axis=1).astype(np.float32)
    w = {"w1": w1, "w2": w2, "b2": rng.standard_normal(3).astype(np.float32)}
    use_bias = (not bn) if bias is None else bias
    if use_bias:
        w["b1"] = (0.1 * rng.standard_normal(4)).astype(np.float32)
    nodes = [
        helper.make_node(
            "Conv", ["x", "w1"] + (["b1"] if use_bias else []), ["c1"], name="conv1", pads=[1, 1, 1, 1]
        )
    ]
    act = "c1"
    if bn:
        w.update(
            gamma=np.array([1.0, 0.9, 1.2, 1.1], np.float32),
            beta=np.array([0.1, 0.0, -0.1, 0.05], np.float32),
            mean=np.array([0.3, -0.2, 0.5, 0.1], np.float32),
            var=np.array([2.0, 4.0, 0.5, 1.5], np.float32),
        )
        nodes.append(
            helper.make_node(
                "BatchNormalization", ["c1", "gamma", "beta", "mean", "var"], ["n1"], name="bn1", epsilon=EPS
            )
        )
        act = "n1"
    nodes += [
        helper.make_node("Relu", [act], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2"),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["y"], name="flatten"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 2, 4, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(v, k) for k, v in w.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, {k: v.astype(np.float64) for k, v in w.items()}


def node_inputs(model, name: str) -> list[np.ndarray]:
    node = next(n for n in model.graph.nodes if n.name == name)
    return [np.asarray(t.values, dtype=np.float64) for t in node.inputs[1:]]


def run_proto(proto: onnx.ModelProto, x: np.ndarray, outputs: list[str] | None = None) -> list[np.ndarray]:
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    del proto.graph.value_info[:]
    for name in outputs or []:
        proto.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    sess = make_session(proto.SerializeToString(), providers=["CPUExecutionProvider"], optimize=False)
    return sess.run(outputs or ["y"], {"x": x})


def channel_stats(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = np.moveaxis(v.astype(np.float64), 1, 0).reshape(v.shape[1], -1)
    return flat.mean(1), flat.std(1)


def test_ar_with_batchnorm_normalises_and_rescales_gamma() -> None:
    proto, w = tiny_model(bn=True)
    model, report = onnxfold.fold(proto, 0.5, validate=False, method="fold", repair="ar")
    (plan,) = [p for p in report.plans if p.status == "folded"]
    assert plan.labels.tolist() == [0, 0, 1, 1]
    sigma = np.sqrt(w["var"] + EPS)
    wn = w["w1"] / sigma[:, None, None, None]
    (w1,) = node_inputs(model, "conv1")  # no bias added: the shift stays in the BN mean
    gamma, beta, mean, var = node_inputs(model, "bn1")
    for c, (i, j) in enumerate([(0, 1), (2, 3)]):
        np.testing.assert_allclose(w1[c], (wn[i] + wn[j]) / 2, rtol=1e-6)
        np.testing.assert_allclose(
            mean[c], (w["mean"][i] / sigma[i] + w["mean"][j] / sigma[j]) / 2, rtol=1e-6
        )
        cos = float(
            np.dot(w["w1"][i].ravel(), w["w1"][j].ravel())
            / np.linalg.norm(w["w1"][i])
            / np.linalg.norm(w["w1"][j])
        )
        assert 0.5 < cos < 0.999
        s = np.sqrt(2 / (1 + cos))
        np.testing.assert_allclose(gamma[c], (w["gamma"][i] + w["gamma"][j]) / 2 * s, rtol=1e-6)
        np.testing.assert_allclose(beta[c], (w["beta"][i] + w["beta"][j]) / 2, rtol=1e-6)
    np.testing.assert_allclose(var + EPS, 1.0, rtol=1e-7)
    stats = report.passes[2].stats
    assert stats["bn_pairs"] == 1 and stats["mean_gamma_factor"] > 1.0
    onnx.checker.check_model(to_model_proto(model), full_check=True)


def test_ar_without_batchnorm_rescales_rows_to_mean_norm() -> None:
    proto, w = tiny_model(bn=False)
    model, report = onnxfold.fold(proto, 0.5, validate=False, method="fold", repair="ar")
    w1, b1 = node_inputs(model, "conv1")
    for c, (i, j) in enumerate([(0, 1), (2, 3)]):
        merged = (w["w1"][i] + w["w1"][j]) / 2
        f = (np.linalg.norm(w["w1"][i]) + np.linalg.norm(w["w1"][j])) / 2 / np.linalg.norm(merged)
        assert f > 1.001
        np.testing.assert_allclose(w1[c], merged * f, rtol=1e-6)
        np.testing.assert_allclose(b1[c], (w["b1"][i] + w["b1"][j]) / 2, rtol=1e-6)  # bias kept as average
    naive, _ = onnxfold.fold(proto, 0.5, validate=False, method="fold", repair="none")
    np.testing.assert_allclose(
        node_inputs(naive, "conv2")[0], node_inputs(model, "conv2")[0]
    )  # consumer: sums


@pytest.mark.parametrize("bn", [True, False])
def test_data_repair_reaches_the_members_statistics(bn: bool) -> None:
    proto, w = tiny_model(bn=bn)
    rng = np.random.default_rng(5)
    calib = rng.standard_normal((64, 2, 4, 4)).astype(np.float32)
    model, report = onnxfold.fold(proto, 0.5, validate=False, method="fold", repair="data", calibration=calib)
    pre = "c1"  # the producer's output, measured before and after
    (orig,) = run_proto(proto, calib, [pre])
    (got,) = run_proto(to_model_proto(model), calib, ["n1" if bn else pre])
    m, s = channel_stats(orig)
    if bn:  # goal in the BN's normalised units, then γ/β as merged by the fold
        a, b = s / np.sqrt(w["var"] + EPS), (m - w["mean"]) / np.sqrt(w["var"] + EPS)
        gamma, beta = node_inputs(model, "bn1")[:2]
        goal_std = np.abs(gamma) * np.array([a[:2].mean(), a[2:].mean()])
        goal_mean = gamma * np.array([b[:2].mean(), b[2:].mean()]) + beta
    else:
        goal_std, goal_mean = np.array([s[:2].mean(), s[2:].mean()]), np.array([m[:2].mean(), m[2:].mean()])
    got_m, got_s = channel_stats(got)
    np.testing.assert_allclose(got_s, goal_std, rtol=1e-4)
    np.testing.assert_allclose(got_m, goal_mean, rtol=1e-4, atol=1e-5)
    naive, _ = onnxfold.fold(proto, 0.5, validate=False, method="fold", repair="none")
    (naive_out,) = run_proto(to_model_proto(naive), calib, ["n1" if bn else pre])
    assert np.abs(channel_stats(naive_out)[1] - goal_std).max() > 1e-2  # the naive fold misses the goal
    assert report.passes[2].stats["sites"] == 1


def test_data_repair_runs_a_model_fixed_at_batch_one() -> None:
    """A model exported at batch 1 (easyhtr's handwriting reader) measures its 64 calibration samples
    one at a time, to the statistics a free batch gives; they had run as one batch and failed."""
    proto, _ = tiny_model(bn=True)
    calib = np.random.default_rng(5).standard_normal((64, 2, 4, 4)).astype(np.float32)
    fixed = onnx.ModelProto()
    fixed.CopyFrom(proto)
    for value in (fixed.graph.input[0], fixed.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    kw = dict(validate=False, method="fold", repair="data", calibration=calib)
    free_model, _ = onnxfold.fold(proto, 0.5, **kw)
    fixed_model, report = onnxfold.fold(fixed, 0.5, **kw)
    assert report.passes[2].stats["sites"] == 1
    got = dict(zip(["gamma", "beta"], node_inputs(fixed_model, "bn1")[:2], strict=True))
    want = dict(zip(["gamma", "beta"], node_inputs(free_model, "bn1")[:2], strict=True))
    for name in got:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mode", ["ar", "data"])
@pytest.mark.parametrize("bn", [True, False])
def test_sparsity_zero_with_repair_is_bit_exact(bn: bool, mode: str) -> None:
    proto, _ = tiny_model(bn=bn)
    calib = np.random.default_rng(0).standard_normal((8, 2, 4, 4)).astype(np.float32)
    model, _ = onnxfold.fold(
        proto, 0.0, validate=False, method="fold", repair=mode, calibration=calib if mode == "data" else None
    )
    out = to_model_proto(model)
    assert {i.name: numpy_helper.to_array(i).tobytes() for i in out.graph.initializer} == {
        i.name: numpy_helper.to_array(i).tobytes() for i in proto.graph.initializer
    }
    assert np.array_equal(run_proto(out, calib)[0], run_proto(proto, calib)[0])


def test_repair_errors(tmp_path: Path, capsys) -> None:
    proto, _ = tiny_model(bn=True)
    fused, _ = tiny_model(bn=False)
    with pytest.raises(PassError, match="'dir' does not apply"):
        onnxfold.fold(fused, 0.5, validate=False, method="fold", repair="dir")
    with pytest.raises(PipelineError, match="needs calibration"):
        onnxfold.fold(proto, 0.5, validate=False, method="fold", repair="data")
    with pytest.raises(PassError, match="no fold pass"):
        onnxfold.run_pipeline(proto, parse_pipeline("canonicalize,repair:mode=ar", REGISTRY))
    src = tmp_path / "tiny.onnx"
    onnx.save(fused, src)
    cli = ["fold", str(src), "-o", str(tmp_path / "out.onnx"), "-s", "0.5", "--no-validate"]
    assert main(cli + ["--repair", "dir"]) == 2
    assert "onnxfold: error: repair mode 'dir' does not apply" in capsys.readouterr().err
    assert not (tmp_path / "out.onnx").exists()
    onnx.save(proto, src)
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(4):  # one sample per file, no batch axis
        np.save(
            calib / f"{i:03d}.npy", np.random.default_rng(i).standard_normal((2, 4, 4)).astype(np.float32)
        )
    assert (
        main(cli + ["--repair", "data", "--calibration", str(calib), "--report", str(tmp_path / "r.json")])
        == 0
    )
    assert (tmp_path / "out.onnx").exists()
    passes = {p["name"]: p for p in json.loads((tmp_path / "r.json").read_text())["passes"]}
    assert passes["repair"]["stats"]["mode"] == "data" and passes["repair"]["stats"]["sites"] == 1


def test_pipeline_string_runs_fold_then_repair() -> None:
    proto, _ = tiny_model(bn=True)
    passes = parse_pipeline("canonicalize,fold:sparsity=0.5,repair:mode=ar,cleanup", REGISTRY)
    model, report = onnxfold.run_pipeline(proto, passes)
    via_api, _ = onnxfold.fold(proto, 0.5, validate=False, method="fold", repair="ar")
    x = np.random.default_rng(2).standard_normal((3, 2, 4, 4)).astype(np.float32)
    assert np.array_equal(run_proto(to_model_proto(model), x)[0], run_proto(to_model_proto(via_api), x)[0])
    assert [r.name for r in report.passes] == ["canonicalize", "fold", "repair", "cleanup"]


def test_a_pass_named_twice_in_a_row_with_options_is_refused() -> None:
    """A trial wrote ``fold:sparsity=0.3,fold:ignore=x`` for one fold with two options: it built two
    folds, and the first, without the ignore, hung on the group it meant to leave out."""
    with pytest.raises(PipelineError, match=r"named twice in a row .* as in fold:sparsity=0.3,ignore=x;"):
        parse_pipeline("canonicalize,fold:sparsity=0.3,fold:ignore=x,cleanup", REGISTRY)
    passes = parse_pipeline("fold:sparsity=0.3,ignore=x,cleanup,fold:sparsity=0.2", REGISTRY)
    assert [p.name for p in passes] == ["fold", "cleanup", "fold"]


# --------------------------------------------------------------------------- exact-duplicate oracles


@pytest.mark.parametrize("mode", ["ar", "data"])  # mode none: tests/test_oracles.py
@pytest.mark.parametrize(
    ("arch", "style"),
    [("resnet18", "legacy-bn"), ("resnet18", "legacy"), ("vgg11bn", "legacy-bn"), ("mlp", "legacy")],
)
def test_duplicates_stay_exact_under_every_repair(exported, arch: str, style: str, mode: str) -> None:
    pair = exported(arch, style)
    x = pair.input(batch=3, seed=11)
    calib = pair.input(batch=32, seed=12) if mode == "data" else None
    model, report = onnxfold.fold(
        pair.wide, 0.5, validate=False, method="fold", repair=mode, calibration=calib
    )
    sess = make_session(to_model_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"input": x})[0]
    want = make_session(pair.compact, providers=["CPUExecutionProvider"]).run(["logits"], {"input": x})[0]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    # nothing is added (no bias for the shift −μ/σ); equal vectors such as var = 1 − eps may be shared by cleanup
    assert report.after.params <= model_stats(onnx.load(str(pair.compact))).params
    stats = report.passes[2].stats
    assert stats.get("bn_pairs", 0) + stats.get("bn_free_producers", 0) + stats.get("sites", 0) > 0
    if mode == "ar":
        assert stats.get("mean_gamma_factor", 1.0) == pytest.approx(1.0, abs=1e-9)
        assert stats.get("mean_norm_factor", 1.0) == pytest.approx(1.0, abs=1e-9)


# --------------------------------------------------------------------------- variance collapse on trained models


def _variance_ratio(model, original: onnx.ModelProto, x: np.ndarray) -> float:
    """docs/method.md §2.1 on the logits (a layer that folding never narrows): mean over classes of
    Var(folded) / Var(original) over the samples."""
    ref = make_session(original.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input": x}
    )[0]
    got = make_session(to_model_proto(model).SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input": x}
    )[0]
    return float((got.var(0) / ref.var(0)).mean())


@pytest.mark.parametrize("name", ["resnet18", "vgg11bn"])
def test_ar_raises_the_variance_ratio_on_a_trained_model(name: str) -> None:
    from onnxfold.models.digits import load_digits_split

    x_train, _, x_test, y_test = load_digits_split()
    original = onnx.load(str(ZOO / f"{name}.onnx"))
    ratios, accuracy = {}, {}
    for mode in ("none", "ar", "data"):
        model, _ = onnxfold.fold(
            original,
            0.5,
            validate=False,
            method="fold",
            repair=mode,
            n_init=2,
            calibration=x_train[:256] if mode == "data" else None,
        )
        ratios[mode] = _variance_ratio(model, original, x_train[:256])
        sess = make_session(to_model_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
        accuracy[mode] = float((sess.run(None, {"input": x_test})[0].argmax(1) == y_test).mean())
    assert ratios["none"] < 0.05  # the collapse (§2.1)
    assert ratios["ar"] > 5 * ratios["none"] and ratios["ar"] > 0.1
    assert 0.5 < ratios["data"] < 1.5
    assert accuracy["data"] > accuracy["none"] + 0.2
    assert accuracy["ar"] > accuracy["none"]
    if name == "resnet18":  # why sites are repaired in topological order (§6.2): one pass overshoots
        passes = [
            CanonicalizePass(),
            FoldPass(sparsity=0.5, n_init=2),
            RepairPass(mode="data", calibration_data=x_train[:256], sequential=False),
        ]
        one_pass, _ = onnxfold.run_pipeline(original, passes)
        assert abs(np.log(_variance_ratio(one_pass, original, x_train[:256]))) > 2 * abs(
            np.log(ratios["data"])
        )
