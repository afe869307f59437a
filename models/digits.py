"""The fixed train/test split of scikit-learn's bundled 8×8 digits (no torch needed).

x = pixels / 16 as float32 NCHW [N, 1, 8, 8]; y = int64 labels 0..9.
Split: ``train_test_split(arange(1797), test_size=0.3, random_state=0, stratify=y)`` → 1257 train, 540 test.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SPLIT", "load_digits_split", "split_indices"]

SPLIT: dict[str, object] = {"test_size": 0.3, "random_state": 0, "stratify": "y", "scale": "pixels / 16"}


def split_indices() -> tuple[np.ndarray, np.ndarray]:
    """Row indices (into ``load_digits()``) of the train and test parts of the fixed split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    y = load_digits().target
    idx = np.arange(len(y))
    train, test = train_test_split(
        idx, test_size=SPLIT["test_size"], random_state=SPLIT["random_state"], stratify=y
    )
    return train, test


def load_digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): x float32 [N, 1, 8, 8] in [0, 1], y int64."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = data.target.astype(np.int64)
    train, test = split_indices()
    return x[train], y[train], x[test], y[test]
