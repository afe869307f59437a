"""Embeddings: how ``auto`` tells feature vectors from class scores, and the ``distance`` metric that
compares what a user of embeddings reads from them, the distances between them.

``distance`` = max(0, 1 − ‖D_b − D_a‖_F / ‖D_a‖_F), D the matrix of cosine distances 1 − cos(v_i, v_j)
between the output's vectors (its rows along the last axis: one per sample of [N, D], one per frame
of [N, T, …, D]; at most :data:`MOST_ROWS` of them, evenly spaced). A fold that shrinks every
distance by 10% scores 0.9 however close each vector stays to its original: Google's
speech-embedding CNN, compared by DTW over frames against enrolled keywords at a fixed threshold,
kept cosine 0.992 and r2 0.9925 where its distances shrank by 7–26% and a wake-word judge's false
accepts rose from 20% to 37–80%; ``distance`` ranked its five folds as the judge did (0.91, 0.90,
0.80, 0.70, 0.03), cosine and r2 did not.
"""

from __future__ import annotations

import numpy as np

from onnxfold.runtime.probability_maps import SIGMOID_OPS
from onnxfold.runtime.producers import RECURRENT_OPS

#: a Softmax's or LogSoftmax's rows are probabilities, never an embedding
LOGIT_OPS = {"Softmax", "LogSoftmax"}
#: the most vectors whose pairwise distances ``distance`` compares (evenly spaced among all)
MOST_ROWS = 512


#: ops whose [B, D] output is a token model's pooled features (masked mean or max, a normalisation,
#: the [CLS] row taken with Gather or Slice, BERT's Tanh pooler), not class scores
POOLING_OPS = {
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "LpNormalization",
    "LayerNormalization",
    "Gather",
    "Slice",
    "Tanh",
}


#: ops that normalise a [B, D] output after the last linear layer: features compared by distance, not
#: class scores (OpenCV's SFace face recogniser writes `fc1` from a BatchNormalization after its Gemm, as
#: ArcFace-style recognisers do; read by its argmax, the search kept it whole where a 20% fold kept
#: every identity decision)
NORMALIZING_OPS = {"BatchNormalization", "LayerNormalization", "LpNormalization", "InstanceNormalization"}


def embedding_like(ref: np.ndarray, producer_op: str | None = None, token_inputs: bool = False) -> bool:
    """Whether float rows [B, D] are an embedding (compared by r2: the argmax of a feature vector is no
    prediction) rather than class scores: never a Softmax's (near one-hot rows have unit norm), else
    rows of unit L2 norm, rows one of :data:`NORMALIZING_OPS` made (not probabilities), or, on a model
    that reads token ids, rows one of :data:`POOLING_OPS` made
    (a sentence encoder's masked mean, ReduceSum then Div) unless they are probabilities (non-negative
    rows summing to 1), or a recurrent layer's state (:data:`~onnxfold.runtime.producers.RECURRENT_OPS`:
    chars2vec's word vectors were judged by their argmax, which no fold moves). A signal model's
    ReduceMean or ReduceMax may pool frame logits into class scores, so there only unit-norm rows count."""
    ref = np.asarray(ref)
    if ref.dtype.kind != "f" or ref.ndim != 2 or ref.size == 0:
        return False
    rows = ref.astype(np.float64)
    if producer_op not in LOGIT_OPS and np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-3):
        return True
    if producer_op in RECURRENT_OPS or producer_op in NORMALIZING_OPS:  # a state, or normalised features
        return not probabilities(rows)
    return token_inputs and producer_op in POOLING_OPS and not probabilities(rows)


def probabilities(ref: np.ndarray, producer_op: str | None = None) -> bool:
    """Whether ``ref`` holds probabilities over its last axis: a Softmax's or LogSoftmax's, or
    non-negative rows that sum to 1. Only there does an argmax that never moves leave r2 little to
    measure (the blank's probability near 1 everywhere); raw scores whose argmax never moves still
    move themselves, and r2 measures them: DNSMOS's three quality scores [N, 3] read as class scores
    whose argmax was class 0 on every noise clip, and the note hid a fold at r2 0.00 that was off
    by 1.4 MOS."""
    if producer_op in LOGIT_OPS:
        return True
    rows = np.asarray(ref, dtype=np.float64)
    return bool(rows.size and rows.min() >= 0 and np.allclose(rows.sum(axis=-1), 1.0, atol=1e-3))


def distance_agreement(ref: np.ndarray, cand: np.ndarray) -> float:
    """``distance`` (module docstring) of ``cand`` against ``ref``, both [..., D]; ValueError where D < 2."""
    ref, cand = np.asarray(ref), np.asarray(cand)
    if ref.ndim == 0 or ref.shape[-1] < 2:
        raise ValueError(
            "distance compares vectors along an output's last axis: it needs at least two values there"
        )
    a, b = (np.asarray(x, dtype=np.float64).reshape(-1, ref.shape[-1]) for x in (ref, cand))
    rows = np.unique(np.linspace(0, len(a) - 1, min(MOST_ROWS, len(a))).round().astype(np.int64))
    da, db = _cosine_distances(a[rows]), _cosine_distances(b[rows])
    scale = float(np.linalg.norm(da))
    if scale == 0.0:  # one direction everywhere: kept only if it stays so
        return 1.0 if float(np.linalg.norm(db)) == 0.0 else 0.0
    return float(max(0.0, 1.0 - np.linalg.norm(db - da) / scale))


def decision_headed(reference: dict, producers: dict, bounds: dict) -> bool:
    """Whether a model has a decision head: an output a Softmax writes, or one Sigmoid probability per
    sample; its other linear [B, D] heads then regress, not classify (MTCNN's ONet writes box offsets
    [B, 4] and landmarks [B, 10] beside its face probability [B, 2]; MediaPipe's hand landmarks [1, 63]
    and world landmarks beside a presence Sigmoid [1, 1] were read by their argmax, "31 of 32 agree")."""
    return any(
        producers.get(n) in LOGIT_OPS or bounds.get(n) in SIGMOID_OPS and np.size(r) == np.shape(r)[0]
        for n, r in reference.items()
        if np.ndim(r)
    )


def _cosine_distances(v: np.ndarray) -> np.ndarray:
    """1 − cos between every pair of rows of ``v`` (a zero row: distance 1 to every other)."""
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    unit = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
    d = 1.0 - unit @ unit.T
    np.fill_diagonal(d, 0.0)
    return d
