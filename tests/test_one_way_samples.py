"""A fold measured on given samples that make every output decide one way is not written unless
forced: vietcombank-captcha's five digit heads, fed raw 0..255 pixels where the model reads 0..1,
answered one digit each on all 32 captchas, and a fold measured at 0.9994 (written with exit 0 beside
a note) kept 18.8% of new codes. Here LeNet-5 is fed its digits offset by 50 (as a mean left in):
class 4 on every one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from onnxfold.cli.commands import main
from onnxfold.models import bundled_model
from onnxfold.models.digits import load_digits_split

LENET = bundled_model("lenet5.onnx")


def test_samples_that_decide_every_output_one_way_write_nothing(tmp_path: Path, capsys) -> None:
    x = (load_digits_split()[2][:32] + 50).astype(np.float32)
    session = ort.InferenceSession(str(LENET), providers=["CPUExecutionProvider"])
    assert len(set(session.run(None, {session.get_inputs()[0].name: x})[0].argmax(1))) == 1  # the premise
    samples = tmp_path / "raw.npy"
    np.save(samples, x)
    out = tmp_path / "o.onnx"
    assert main(["fold", str(LENET), "-o", str(out), "--inputs", str(samples)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "make every output decide one way" in err, err
    assert "scaled as the model's own code scales them" in err and "nothing written" in err
    assert not out.exists()
    assert main(["fold", str(LENET), "-o", str(out), "--inputs", str(samples), "--force"]) == 0
    assert out.exists()


def test_such_samples_are_refused_before_the_fold_prepares(tmp_path: Path, monkeypatch) -> None:
    """PP-OCR's direction classifier given raw 0..255 lines was refused after 37 s of statistics and
    search: the original's answers on the samples tell before any fold is prepared."""
    import pytest

    import onnxfold
    from onnxfold.passes.fold import FoldPass
    from onnxfold.pipeline.manager import PipelineError

    def prepare(*args, **kwargs):
        raise AssertionError("the fold was prepared before the samples were checked")

    monkeypatch.setattr(FoldPass, "prepare", prepare)
    x = (load_digits_split()[2][:32] + 50).astype(np.float32)
    with pytest.raises(PipelineError, match="make every output decide one way"):
        onnxfold.fold(str(LENET), output=str(tmp_path / "o.onnx"), inputs=x, min_fidelity=0.95)


def test_a_fixed_sparsity_on_such_samples_is_warned_of_as_the_search_refuses_them(
    tmp_path: Path, capsys
) -> None:
    """Trial 156: an emotion CNN given raw 0..255 faces answered one class on 31 of 32; `-s 0.2
    --inputs` fitted its merges on them and validated at "top1 100.0%" with no word, and kept 27% of new
    labels. A fixed sparsity still writes (it was asked for), with a warning that names the cause."""
    x = (load_digits_split()[2][:32] + 50).astype(np.float32)
    samples = tmp_path / "raw.npy"
    np.save(samples, x)
    out = tmp_path / "o.onnx"
    assert main(["fold", str(LENET), "-o", str(out), "-s", "0.2", "--inputs", str(samples)]) == 0
    text = capsys.readouterr().out
    line = next(t for t in text.splitlines() if "the given samples exercise none" in t)
    assert line.startswith("warning: the given samples exercise none of the outputs (on ")
    assert "for a model answering class 4 everywhere" in line and "raw 0..255 pixels" in line
    # the same fold on the digits as the model reads them: no such line
    np.save(samples, load_digits_split()[2][:32].astype(np.float32))
    assert (
        main(["fold", str(LENET), "-o", str(out), "-s", "0.2", "--inputs", str(samples), "--overwrite"]) == 0
    )
    assert "exercise none" not in capsys.readouterr().out
