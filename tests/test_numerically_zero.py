"""An output of float32 denormals alone is 0 to any task.

hdface's MTCNN ONet writes landmarks of about 5e-41 (its package reads them from another network):
a fold that kept every face box read "landmark r2 0.9548" and was refused on it, validation printed
"max_abs 1.9e-43 ... cosine 0.999994 r2 0.9999", and static quantization called the landmarks' task
lost for answering 0 everywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from harness import Net

from onnxfold.runtime.calibration import collapsed_outputs
from onnxfold.runtime.compare import compare_outputs
from onnxfold.runtime.fidelity import fidelity_value
from onnxfold.runtime.padding import numerically_zero
from onnxfold.runtime.resample import low_value

TINY = float(np.finfo(np.float32).tiny)


@pytest.mark.parametrize("metric", ["r2", "cosine", "relerr"])
def test_denormals_measure_as_the_zeros_they_are(metric: str) -> None:
    rng = np.random.default_rng(0)
    ref = (rng.standard_normal((32, 10)) * 1e-41).astype(np.float32)
    cand = (rng.standard_normal((32, 10)) * 1e-41).astype(np.float32)
    assert numerically_zero(ref) and np.ptp(ref) > 0
    assert fidelity_value(metric, ref, cand, 32) == 1.0
    assert low_value(metric, ref, cand, 32) == 1.0  # the bootstrap reads them alike
    assert fidelity_value(metric, ref, np.full_like(ref, 0.5), 32) == 0.0  # a real value where 0 was
    (line,) = compare_outputs({"landmark": ref}, {"landmark": cand})
    assert line.cosine == 1.0 and line.top1_agreement is None, line.summary()  # no classes in them
    assert not numerically_zero(np.float32([0.0, 2 * TINY])) and not numerically_zero(np.float32([]))


def _scaled(path: Path, small: float, big: float) -> list[str]:
    """x [N, 4] -> (x · small, x · big); the output names."""
    net = Net({"small": np.array([small], np.float32), "big": np.array([big], np.float32)})
    x = net.input("x", ["N", 4])
    proto = net.model(net("Mul", x, "small"), net("Mul", x, "big"))
    onnx.save(proto, str(path))
    return [o.name for o in proto.graph.output]


def test_quantization_that_answers_0_for_denormals_is_no_lost_task(tmp_path: Path) -> None:
    src, flat = tmp_path / "src.onnx", tmp_path / "flat.onnx"
    tiny, real = _scaled(src, 1e-41, 1.0)
    _scaled(flat, 0.0, 0.0)
    feed = {"x": np.random.default_rng(1).standard_normal((8, 4)).astype(np.float32)}
    said = collapsed_outputs(src, flat, feed)
    assert f"{real} (0 everywhere)" in said and tiny not in said
