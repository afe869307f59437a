"""``onnxfold bench``: measurements, not tests. ``fold``: wall time and peak memory of folding."""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

from onnxfold.report.progress import progress_bar


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_fold(model: str | None, sparsity: float, repeat: int) -> dict:
    """Fold ``model`` ``repeat`` times; report the median wall time and the process's peak RSS."""
    from onnxfold.api import fold
    from onnxfold.models import bundled_model

    path = Path(model) if model else bundled_model()
    rss_start = _peak_rss_mib()
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in progress_bar(range(max(1, repeat)), "bench fold", unit="run"):
            start = time.perf_counter()
            _, report = fold(path, sparsity, Path(tmp) / "folded.onnx", validate=False)
            times.append(time.perf_counter() - start)
    times.sort()
    result = {
        "model": str(path),
        "sparsity": sparsity,
        "median_seconds": times[len(times) // 2],
        "min_seconds": times[0],
        "peak_rss_mib": _peak_rss_mib(),
        "rss_before_mib": rss_start,
        "params_before": report.before.params,
        "params_after": report.after.params,
    }
    print(
        f"fold {path.name} at sparsity {sparsity}: median {result['median_seconds']:.3f} s "
        f"(min {result['min_seconds']:.3f} s over {len(times)} runs), peak RSS {result['peak_rss_mib']:.0f} MiB "
        f"(process, {rss_start:.0f} MiB before folding); params {report.before.params} -> {report.after.params}"
    )
    return result
