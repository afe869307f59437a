"""A quick latency comparison of the original and the compressed model (validate's ``speed_check``).

Folding removes MACs, but a model is only faster if the runtime's kernels like its new widths:
odd channel counts (11, 45, 179, …) can push onnxruntime's CPU convolutions off their blocked
fast paths, and a folded ResNet-18 with such widths ran 1.6x slower than its original. This check
times both models on the validation inputs so that such a fold says so.

Both models get a fresh session on the validation's execution provider, with idle intra-op
threads not spinning (two sessions' spinning threads would take each other's cores). After two
warm-up runs each, the runs are interleaved in :data:`ROUNDS` rounds (the order reversed every
other round; fewer, down to 2, where one run of each takes more than a tenth of the budget) until
about ``budget_s`` seconds are spent, so that a change of machine load hits
both alike; each model's latency is the median of its runs. The candidate counts as slower when
its median exceeds the original's by more than :data:`SLOWER_ABOVE` (5%: less than that is within
what repeated checks on a busy machine vary by) in a first timing and in a second one that starts
with the candidate; so is a candidate faster by more than that (:func:`~onnxfold.runtime.compare.validate`
keeps the ratio nearer 1), and one within it is called as fast. For a careful
measurement at fixed thread counts and batch sizes, use ``onnxfold bench speed --files ORIGINAL
RESULT``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

#: candidate median / original median above which the candidate is reported slower
SLOWER_ABOVE = 1.05
#: interleaved rounds of the timing
ROUNDS = 10
#: seconds of timed runs of both models together, by default
DEFAULT_BUDGET_S = 1.0


@dataclass
class LatencyCheck:
    """Median latency of the original and the candidate on the same inputs and provider."""

    original_ms: float
    candidate_ms: float
    runs: int  # timed runs of each model
    provider: str
    inputs: dict[str, tuple[int, ...]]

    @property
    def ratio(self) -> float:
        """Candidate latency / original latency (below 1: the candidate is faster)."""
        return self.candidate_ms / self.original_ms if self.original_ms > 0 else float("inf")

    @property
    def slower(self) -> bool:
        return self.ratio > SLOWER_ABOVE

    def to_dict(self) -> dict[str, Any]:
        return {
            "original_ms": self.original_ms,
            "candidate_ms": self.candidate_ms,
            "ratio": self.ratio,
            "speedup": 1.0 / self.ratio if self.ratio > 0 else None,
            "slower": self.slower,
            "runs": self.runs,
            "provider": self.provider,
            "inputs": {k: [int(d) for d in v] for k, v in self.inputs.items()},
        }

    def summary(self) -> str:
        shapes = ", ".join(f"{k}{list(v)}" for k, v in self.inputs.items())
        head = (
            f"latency: original {self.original_ms:.3g} ms, result {self.candidate_ms:.3g} ms "
            f"(median of {self.runs} interleaved runs each on {shapes}, {self.provider})"
        )
        if self.slower:
            return head + f": {self.ratio:.2f}x SLOWER than the original"
        if beside(self.original_ms, self.candidate_ms):
            return (
                head
                + f": as fast as the original within the {SLOWER_ABOVE - 1:.0%} that repeated checks vary by"
            )
        return head + f": {1.0 / self.ratio:.2f}x as fast as the original"

    def warning(self, round_to: int | None) -> str | None:
        """One warning line when the candidate is slower, naming the round used and what to try."""
        if not self.slower:
            return None
        timing = "onnxfold bench speed --files INPUT.onnx OUTPUT.onnx times both with care"
        if round_to is None:
            hint = f"check the folded widths: {timing}"
        elif round_to <= 1:
            hint = f"its widths are not rounded: fold again with --round-to 8 (or 16); {timing}"
        else:
            hint = f"its widths are multiples of {round_to}: try another --round-to (e.g. {2 * round_to}); {timing}"
        return (
            f"warning: the folded model is {self.ratio:.2f}x slower than the original on this machine; {hint}"
        )


def beside(original_ms: float, candidate_ms: float) -> bool:
    """Whether two latencies lie within :data:`SLOWER_ABOVE` of each other either way: a difference
    smaller than that is what repeated checks on a busy machine vary by, and a larger one is timed a
    second time before either is reported."""
    return candidate_ms <= SLOWER_ABOVE * original_ms and original_ms <= SLOWER_ABOVE * candidate_ms


def time_pair(
    original: Any,
    candidate: Any,
    feed: Mapping[str, np.ndarray],
    budget_s: float = DEFAULT_BUDGET_S,
    rounds: int = ROUNDS,
) -> tuple[float, float, int]:
    """Median milliseconds of two onnxruntime sessions on ``feed``, runs interleaved (see the module
    docstring); returns (original ms, candidate ms, timed runs of each)."""
    feed = dict(feed)
    sessions = (original, candidate)
    once = []
    for sess in sessions:
        sess.run(None, feed)  # warm-up: the first runs allocate buffers and pack weights
        start = time.perf_counter()
        sess.run(None, feed)
        once.append(max(time.perf_counter() - start, 1e-6))
    rounds = max(2, min(rounds, int(budget_s / sum(once))))  # slow models: fewer rounds, not more time
    per_round = max(1, int(budget_s / (sum(once) * rounds)))
    samples: tuple[list[float], list[float]] = ([], [])
    for r in range(rounds):
        order = (0, 1) if r % 2 == 0 else (1, 0)
        for i in order:
            for _ in range(per_round):
                start = time.perf_counter()
                sessions[i].run(None, feed)
                samples[i].append(time.perf_counter() - start)
    return (
        float(np.median(samples[0]) * 1000.0),
        float(np.median(samples[1]) * 1000.0),
        len(samples[0]),
    )
