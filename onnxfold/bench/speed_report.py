"""The report of ``onnxfold bench speed``: speedups and MAC/size ratios against each architecture's
original, the table, the ResNet-18 acceptance figures and the speedup-vs-sparsity plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from onnxfold.bench.speed_variants import Variant
from onnxfold.report.stats import format_table, human_count


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def summarize(variants: Sequence[Variant]) -> list[dict[str, Any]]:
    """Rows with speedups and MAC/size ratios against the architecture's original."""
    rows = []
    for v in variants:
        orig = next(o for o in variants if o.arch == v.arch and o.kind == "original")
        row = v.to_dict()
        row["mac_ratio"] = _ratio(orig.macs, v.macs)
        row["size_ratio"] = _ratio(v.file_bytes, orig.file_bytes)
        row["speedup"] = {b: _ratio(orig.latency_ms.get(b), v.latency_ms.get(b)) for b in v.latency_ms}
        row["speedup_p10"] = {
            b: _ratio(orig.latency_p10_ms.get(b), v.latency_p10_ms.get(b)) for b in v.latency_ms
        }
        rows.append(row)
    return rows


def format_rows(rows: Sequence[dict[str, Any]], batches: Sequence[int]) -> str:
    head = ["model", "variant", "params", "MACs", "MAC x", "size MiB", "size ratio"]
    for b in batches:
        head += [f"b{b} ms", f"b{b} x"]
    head += ["peak RSS MiB", "session MiB"]
    table = []
    for r in rows:
        line = [
            r["arch"],
            r["name"],
            human_count(r["params"]),  # a 17K-parameter MLP read "0.02M" and "0M" MACs
            human_count(r["macs"]),
            f"{r['mac_ratio']:.2f}" if r["mac_ratio"] else "-",
            f"{r['file_bytes'] / 2**20:.2f}",
            f"1/{1 / r['size_ratio']:.{2 if r['size_ratio'] > 0.1 else 1}f}"  # 1/1.03, not 1/1.0
            if r["size_ratio"] and r["size_ratio"] < 1
            else (f"{r['size_ratio']:.2f}" if r["size_ratio"] else "-"),
        ]
        for b in batches:
            ms, sp = r["latency_ms"].get(b), r["speedup"].get(b)
            line += [f"{ms:.2f}" if ms else "-", f"{sp:.2f}" if sp else "-"]
        line += [
            f"{r['peak_rss_mib']:.0f}" if r["peak_rss_mib"] else "-",
            f"{r['session_rss_mib']:.0f}" if r["session_rss_mib"] else "-",
        ]
        table.append(line)
    return format_table(head, table, align="ll" + "r" * (len(head) - 2))


def slower_warnings(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One warning line per folded variant whose median latency, at some batch, exceeds its original's
    by more than :data:`~onnxfold.runtime.latency.SLOWER_ABOVE` (5%)."""
    from onnxfold.runtime.latency import SLOWER_ABOVE

    lines = []
    for r in rows:
        if r["kind"] != "fold":
            continue
        slow = {b: 1.0 / sp for b, sp in r["speedup"].items() if sp and 1.0 / sp > SLOWER_ABOVE}
        if not slow:
            continue
        at = ", ".join(f"{x:.2f}x at batch {b}" for b, x in slow.items())
        hint = (
            "its widths are not rounded: fold with --round-to 8"
            if r["round_to"] <= 1
            else f"its widths are multiples of {r['round_to']}: try another --round-to"
        )
        lines.append(f"warning: {r['arch']} {r['name']} is slower than the original ({at}); {hint}")
    return lines


def round_effect(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per architecture, sparsity and round_to m > 1 that was built: the latency of the model folded
    with round_to 1 over the one folded with m (above 1: rounding made it faster), per batch."""
    out = []
    for r in rows:
        if r["kind"] != "fold" or r["round_to"] <= 1:
            continue
        plain = next(
            (
                p
                for p in rows
                if p["arch"] == r["arch"]
                and p["kind"] == "fold"
                and p["round_to"] == 1
                and p["sparsity"] == r["sparsity"]
            ),
            None,
        )
        if plain is None:
            continue
        out.append(
            {
                "arch": r["arch"],
                "sparsity": r["sparsity"],
                "round_to": r["round_to"],
                "same_widths": plain["path"] == r["path"],
                "speedup_over_round_to_1": {
                    b: _ratio(plain["latency_ms"].get(b), r["latency_ms"].get(b)) for b in r["latency_ms"]
                },
            }
        )
    return out


def format_round_effect(effects: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for e in effects:
        if e["same_widths"]:
            lines.append(
                f"{e['arch']} fold {e['sparsity']:g}: round_to {e['round_to']} gives the same widths as round_to 1"
            )
            continue
        per = ", ".join(
            f"{x:.2f}x at batch {b}" for b, x in e["speedup_over_round_to_1"].items() if x is not None
        )
        lines.append(
            f"{e['arch']} fold {e['sparsity']:g}: round_to {e['round_to']} over round_to 1: speedup {per}"
        )
    return lines


def acceptance(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """ResNet-18: fold-50 % speedup at batch 1 (≥ 3x), latency vs the native half width (within 10 %),
    folded+INT8 file size vs the original (< 1/12)."""
    res = [r for r in rows if r["arch"] == "resnet18"]
    if not res:
        return {}
    fold50 = next(
        (r for r in res if r["kind"] == "fold" and r["sparsity"] == 0.5 and r["round_to"] == 1), None
    )
    native = next((r for r in res if r["kind"] == "native"), None)
    out: dict[str, Any] = {}
    if fold50:
        for b in fold50["latency_ms"]:
            out[f"fold50_speedup_b{b}"] = fold50["speedup"].get(b)
            out[f"fold50_speedup_p10_b{b}"] = fold50["speedup_p10"].get(b)
        out["fold50_speedup_ok"] = bool(out.get("fold50_speedup_b1") and out["fold50_speedup_b1"] >= 3.0)
        if native:
            for b in fold50["latency_ms"]:
                out[f"fold50_over_native_b{b}"] = _ratio(fold50["latency_ms"][b], native["latency_ms"].get(b))
                out[f"fold50_over_native_p10_b{b}"] = _ratio(
                    fold50["latency_p10_ms"][b], native["latency_p10_ms"].get(b)
                )
            ratio = out.get("fold50_over_native_b1")
            out["fold50_vs_native_ok"] = bool(ratio and abs(ratio - 1.0) <= 0.10)
            out["native_macs_over_fold50"] = _ratio(native["macs"], fold50["macs"])
    for mode in ("static", "dynamic"):
        q = next((r for r in res if r["kind"] == f"int8-{mode}"), None)
        if q:
            out[f"int8_{mode}_size_ratio"] = q["size_ratio"]
            out[f"int8_{mode}_size_ok"] = bool(q["size_ratio"] and q["size_ratio"] < 1 / 12)
    return out


def plot(rows: Sequence[dict[str, Any]], path: Path, batches: Sequence[int]) -> Path | None:
    """Speedup vs channel sparsity per architecture (fold round_to 1 and 8, MAC ratio, INT8, native)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    archs = list(dict.fromkeys(r["arch"] for r in rows))
    fig, axes = plt.subplots(1, len(archs), figsize=(4.6 * len(archs), 4.2), squeeze=False)
    for ax, arch in zip(axes[0], archs, strict=True):
        rs = [r for r in rows if r["arch"] == arch]
        for b, style in zip(batches, ("-", "--", ":"), strict=False):
            for rt, marker in ((1, "o"), (8, "s")):
                pts = sorted(
                    [(0.0, 1.0)]
                    + [
                        (r["sparsity"], r["speedup"].get(b))
                        for r in rs
                        if r["kind"] == "fold" and r["round_to"] == rt and r["speedup"].get(b)
                    ]
                )
                if len(pts) > 1:
                    ax.plot(
                        [p[0] for p in pts],
                        [p[1] for p in pts],
                        style,
                        marker=marker,
                        ms=4,
                        label=f"fold r{rt} b{b}",
                    )
            for r in rs:
                if r["kind"].startswith("int8") and r["speedup"].get(b):
                    ax.plot(
                        r["sparsity"],
                        r["speedup"][b],
                        "^" if "static" in r["kind"] else "v",
                        ms=7,
                        label=f"{r['kind']} b{b}",
                    )
                if r["kind"] == "native" and r["speedup"].get(b):
                    ax.plot(r["sparsity"], r["speedup"][b], "*", ms=11, label=f"native x0.5 b{b}")
        macs = sorted(
            [(0.0, 1.0)]
            + [
                (r["sparsity"], r["mac_ratio"])
                for r in rs
                if r["kind"] == "fold" and r["round_to"] == 1 and r["mac_ratio"]
            ]
        )
        ax.plot([p[0] for p in macs], [p[1] for p in macs], color="gray", lw=1, label="MAC ratio")
        ax.set_title(arch)
        ax.set_xlabel("channel sparsity")
        ax.set_ylabel("speedup over original (x)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
