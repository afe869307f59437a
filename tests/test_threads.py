"""Passes run their numpy/scipy/scikit-learn work on a fixed number of BLAS/OpenMP threads, whatever the
environment says, so that a fold's output does not depend on OMP_NUM_THREADS or the core count."""

from __future__ import annotations

from threadpoolctl import threadpool_info, threadpool_limits

from onnxfold.ir.model import load_model
from onnxfold.models import bundled_model
from onnxfold.pipeline.manager import PASS_THREADS, Pass, PassContext, PassManager, PassResult


class RecordThreads(Pass):
    name = "record-threads"
    summary = "records the BLAS/OpenMP pool sizes it runs under"
    options = ()

    def run(self, model, ctx: PassContext) -> PassResult:
        ctx.data["threads"] = sorted({(p["user_api"], p["num_threads"]) for p in threadpool_info()})
        return PassResult(False)


def test_passes_run_on_the_fixed_thread_count_whatever_the_caller_set() -> None:
    pools = {p["user_api"] for p in threadpool_info()}
    assert "blas" in pools  # numpy's BLAS is loaded, so there is something to limit
    for outer in (None, 2, 4):
        ctx = PassContext()
        with threadpool_limits(limits=outer):
            PassManager([RecordThreads()]).run(load_model(bundled_model("lenet5.onnx")), ctx)
        assert ctx.data["threads"] and all(n == PASS_THREADS for _, n in ctx.data["threads"]), ctx.data[
            "threads"
        ]


def test_measurement_sessions_hand_their_buffers_back() -> None:
    """A search builds hundreds of measurement sessions; with onnxruntime's CPU arena each one kept
    its peak buffers (OriNet's search peaked at 2.2 GB, 0.9 GB without the arena, same output)."""
    from onnxfold.runtime.session import make_session, measurement_session

    proto = bundled_model("lenet5.onnx").read_bytes()
    assert measurement_session(proto).get_session_options().enable_cpu_mem_arena is False
    assert make_session(proto).get_session_options().enable_cpu_mem_arena is True
