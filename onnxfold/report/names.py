"""Names as tables print them."""

from __future__ import annotations

#: the widest name a table prints whole; longer ones keep their head and tail (tf2onnx names a fused
#: Conv + BN + ReLU group by every op it absorbed: 350 characters that pushed the table off screen)
NAME_WIDTH = 64


def shortened(name: str, width: int = NAME_WIDTH) -> str:
    """``name`` itself when it fits ``width``, else its head, "…" and its tail (``width`` characters)."""
    if len(name) <= width:
        return name
    tail = (width - 1) // 3
    return name[: width - 1 - tail] + "…" + name[len(name) - tail :]
