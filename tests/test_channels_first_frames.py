"""Per-frame logits exported channels first, [N, C, T] with T free, are no class scores over T.

Trial 162: BeatNet's beat / downbeat / no-beat logits, exported as [1, 3, T], were read by their argmax
over the last axis: 500 frames taken for classes ("argmaxes reach 83 of its 500"). Every search kept the
model whole on "top1 0.86" for a 1.3% fold, and a 31.4% one was refused at "top1 0.09" where its frames'
decisions agreed 0.954. An output whose last axis sizes with the input has no class axis there; it is
read by r2 (`--metric r2` wrote 8.2%, 0.988 of the frames' decisions kept).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from harness import Net

import onnxfold
from onnxfold.runtime.fidelity import output_metrics
from onnxfold.runtime.producers import free_last_axes


def _frames(free: bool) -> onnx.ModelProto:
    """x [N, T, 8] -> Relu(MatMul 8->16) -> MatMul 16->3 -> Transpose: logits [N, 3, T] (T 40 if not ``free``)."""
    rng = np.random.default_rng(0)
    net = Net(
        {
            "W1": rng.standard_normal((8, 16)).astype(np.float32),
            "W2": rng.standard_normal((16, 3)).astype(np.float32),
        }
    )
    x = net.input("x", ["N", "T" if free else 40, 8])
    h = net("Relu", net("MatMul", x, "W1"))
    model = net.model(net("Transpose", net("MatMul", h, "W2"), perm=[0, 2, 1]))
    out = model.graph.output[0]
    model.graph.node[-1].output[0] = out.name = "logits"  # named as BeatNet's: auto reads logits by argmax
    out.type.tensor_type.shape.Clear()
    for d in ["N", 3, "T" if free else 40]:
        dim = out.type.tensor_type.shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = d
    return model


def test_logits_whose_last_axis_sizes_with_the_input_are_read_by_r2(tmp_path: Path) -> None:
    model = _frames(free=True)
    (name,) = [o.name for o in model.graph.output]
    assert free_last_axes(model) == {name}
    x = np.random.default_rng(1).standard_normal((16, 40, 8)).astype(np.float32)
    ref = onnxfold.runtime.session.make_session(model.SerializeToString()).run(None, {"x": x})[0]
    assert ref.shape == (16, 3, 40)
    assert output_metrics({name: ref}, samples=16, free_last=free_last_axes(model))[name] == "r2"
    assert output_metrics({name: ref}, samples=16)[name].startswith("top1")  # what it read before
    fixed = _frames(free=False)  # a fixed last axis says nothing: left as it was
    assert free_last_axes(fixed) == frozenset()
    src = tmp_path / "frames.onnx"
    onnx.save(model, src)
    search = onnxfold.fold(str(src), output=str(tmp_path / "o.onnx"), inputs={"x": x}, min_fidelity=0.9)[
        1
    ].search
    assert search.metrics == {name: "r2"}


def test_points_of_three_coordinates_are_no_ctc_text_lines() -> None:
    """Trial 161: MediaPipe's face mesh writes points [N, 468, 3]; on random faces the argmax of (x, y,
    z) was x at most points, y in short runs between, as a CTC blank separates emissions. The points
    were read as text lines ("points sequence"), a 17% fold measured 0.03, and the data-free search kept
    the model whole. An unnamed output needs the blank and three symbols to be read by its paths."""
    from onnxfold.runtime.fidelity import auto_metric
    from onnxfold.runtime.sequences import ctc_like

    rng = np.random.default_rng(0)
    points = np.stack(
        [100 + rng.normal(0, 3, (32, 468)), 80 + rng.normal(0, 3, (32, 468)), rng.normal(0, 1, (32, 468))], -1
    )
    points[:, 5::40, 1] = 120.0  # y above x at one point in forty: a short "emission"
    assert ctc_like(points, 32) is False
    assert auto_metric("points", points, "Reshape", samples=32) == "r2"
    four = np.concatenate([points, rng.normal(0, 1, (32, 468, 1))], -1)  # a blank and three symbols
    assert ctc_like(four, 32) is True
