"""``--input-value NAME=V``: an input that random N(0, 1) draws make invalid. Robust Video Matting
reads its frames beside a downsample_ratio [1] that scales an internal Resize: negative draws failed
every random run, so the default fold, validation and the data-free search could not start (trial 89),
and nothing but real samples could set it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxfold
from onnxfold.cli import main
from onnxfold.errors import PassError
from onnxfold.folding.samples import token_draws
from onnxfold.ir.model import load_model
from onnxfold.runtime.inputs import make_inputs
from onnxfold.runtime.session import make_session


def _resized(path: Path) -> Path:
    """x [N, 4, 8, 8] resized by ratio [1] (scales [1, 1, ratio - 3, ratio - 3]) -> Conv 16 -> Relu ->
    Conv 4 -> GlobalAveragePool: a ratio of 3 or below, as N(0, 1) draws give, cannot run."""
    rng = np.random.default_rng(0)
    weights = {
        "ones": np.ones(2, np.float32),
        "minus_three": np.full(1, -3.0, np.float32),
        "W1": rng.standard_normal((16, 4, 3, 3)).astype(np.float32) * 0.3,
        "W2": rng.standard_normal((4, 16, 1, 1)).astype(np.float32) * 0.3,
    }
    nodes = [
        helper.make_node("Add", ["ratio", "minus_three"], ["scale"]),
        helper.make_node("Concat", ["ones", "scale", "scale"], ["scales"], axis=0),
        helper.make_node("Resize", ["x", "", "scales"], ["small"], mode="linear"),
        helper.make_node("Conv", ["small", "W1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "W2"], ["c2"]),
        helper.make_node("GlobalAveragePool", ["c2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "resized",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8, 8]),
            helper.make_tensor_value_info("ratio", TensorProto.FLOAT, [1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 1, 1])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_random_samples_hold_the_value_given(tmp_path: Path) -> None:
    src = _resized(tmp_path / "m.onnx")
    model = load_model(src)
    model.input_values = {"ratio": 3.5}
    feed = make_inputs(make_session(str(src)), batch=3, id_draws=token_draws(model))
    assert feed["ratio"].tolist() == [3.5] and feed["x"].shape == (3, 4, 8, 8)
    assert model.copy().input_values == {"ratio": 3.5}


def test_the_default_fold_runs_with_the_value_and_not_without(tmp_path: Path, capsys) -> None:
    src = _resized(tmp_path / "m.onnx")
    with pytest.raises(PassError, match="--input-value NAME=V"):
        onnxfold.fold(src, 0.25, tmp_path / "no.onnx")
    out = tmp_path / "o.onnx"
    assert main(["fold", str(src), "-o", str(out), "--input-value", "ratio=3.5"]) == 0
    feed = {"x": np.ones((2, 4, 8, 8), np.float32), "ratio": np.array([3.5], np.float32)}
    assert make_session(str(out)).run(None, feed)[0].shape == (2, 4, 1, 1)
    assert main(["fold", str(src), "-o", str(out), "-s", "0.5", "--input-value", "ratio=3.5"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize(
    "item, said",
    [
        ("ratio", "takes NAME=VALUE"),
        ("ratio=half", "takes NAME=VALUE"),
        ("speed=2", "not inputs of the model"),
        ("x=1..0", "NAME=LOW..HIGH"),
        ("x=0..", "NAME=LOW..HIGH"),
    ],
)
def test_a_bad_value_is_one_line(tmp_path: Path, capsys, item: str, said: str) -> None:
    src = _resized(tmp_path / "m.onnx")
    assert main(["fold", str(src), "-o", str(tmp_path / "o.onnx"), "-s", "0.5", "--input-value", item]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and said in err
    assert not (tmp_path / "o.onnx").exists()


def test_a_range_draws_the_input_uniformly_within_it(tmp_path: Path) -> None:
    """``NAME=LO..HI``: the range the model reads, where N(0, 1) draws lie outside it (a pitch
    estimator's log-mels at mean -4.9; a digit CNN's pixels in 0..1)."""
    src = _resized(tmp_path / "m.onnx")
    model = load_model(src)
    model.input_values = {"ratio": 3.5, "x": (-10.0, -2.0)}
    feed = make_inputs(make_session(str(src)), batch=64, id_draws=token_draws(model))
    x = feed["x"]
    assert x.min() >= -10.0 and x.max() <= -2.0 and x.std() > 1.5  # spread over the range, not a constant
    assert abs(float(x.mean()) + 6.0) < 0.2
    out = tmp_path / "o.onnx"
    values = ["--input-value", "ratio=3.5", "--input-value", "x=0..1"]
    argv = ["fold", str(src), "-o", str(out), "-s", "0.5", *values]
    assert main(argv) == 0 and out.exists()
