"""Report sections beyond the summary and the ledger: the gate, speed and size against the source model, the
fallback's per-node sensitivity. Each is rows (for report.md, report.html and the model card) and/or a chart."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgec.artifacts.report import figure_png, format_value
from edgec.artifacts.stage_notes import FallbackNote

if TYPE_CHECKING:
    from edgec.artifacts.manifest import Manifest

_ARTIFACT_COLOR, _SOURCE_COLOR, _KEPT_COLOR, _QUANTIZED_COLOR = "#2a9d8f", "#8d99ae", "#e76f51", "#8ab17d"


def gate_rows(manifest: Manifest) -> list[list[str]]:
    """Each gate the final artifact is held to, as parity.gate.failures applies it: metric, value, threshold, verdict."""
    parity = manifest.parity
    final, thresholds = parity.ledger[-1].metrics, parity.thresholds
    verdict = lambda ok: "pass" if ok else "FAIL"  # noqa: E731
    rows = []
    if thresholds.min_cosine is not None and "cosine_mean" in final:
        limit = thresholds.min_cosine
        rows.append(
            [
                "mean cosine to the reference",
                f"{final['cosine_mean']:.6f}",
                f">= {limit}",
                verdict(final["cosine_mean"] >= limit),
            ]
        )
    if thresholds.min_cosine is not None and "similarity_corr_mean" in final:  # a narrower embedding (parity.ledger)
        limit = thresholds.min_cosine
        rows.append(
            [
                "mean similarity correlation with the reference (width-free)",
                f"{final['similarity_corr_mean']:.6f}",
                f">= {limit}",
                verdict(final["similarity_corr_mean"] >= limit),
            ]
        )
    if thresholds.min_agreement is not None and "agreement" in final:
        limit = thresholds.min_agreement
        rows.append(
            [
                "top-1 agreement with the reference",
                f"{final['agreement']:.4f}",
                f">= {limit}",
                verdict(final["agreement"] >= limit),
            ]
        )
    for name, before in parity.reference_metric.items():
        if thresholds.max_drop is not None and name in final:
            drop, limit = before - final[name], thresholds.max_drop
            rows.append(
                [
                    f"{name} drop (points)",
                    f"{drop:.2f} ({before:.2f} -> {final[name]:.2f})",
                    f"<= {limit}",
                    verdict(drop <= limit),
                ]
            )
    return rows


def sensitivity_rows(fallback: FallbackNote, top: int = 10) -> list[list[str]]:
    """The most sensitive MatMuls by their own int8 error, and whether the fallback kept each in float."""
    kept = set(fallback.kept_in_float)
    return [[name, format_value(error), "yes" if name in kept else ""] for name, error in _ranked(fallback, top)]


def sensitivity_plot_png(fallback: FallbackNote, top: int = 20) -> bytes:
    """The fallback's per-node int8 sensitivity (each MatMul's own quantization error), those kept in float marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranked, kept = _ranked(fallback, top)[::-1], set(fallback.kept_in_float)  # most sensitive at the top
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(ranked) + 1.2), dpi=100)
    ax.barh(
        [name for name, _ in ranked],
        [error for _, error in ranked],
        color=[_KEPT_COLOR if name in kept else _QUANTIZED_COLOR for name, _ in ranked],
    )
    ax.set_xlabel("relative output error of the node alone in int8 (calibration set)")
    ax.set_title(f"Fallback: the {len(ranked)} most sensitive MatMuls (red: kept in float, {len(kept)})")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return figure_png(fig)


def _ranked(fallback: FallbackNote, top: int) -> list[tuple[str, float]]:
    return sorted((fallback.sensitivity or {}).items(), key=lambda item: (-item[1], item[0]))[:top]


def speed_size_rows(manifest: Manifest) -> list[dict[str, Any]]:
    """The artifact and its source model: size, and latency where `edgec bench` ran (--baseline for the source)."""
    sizes, bench = manifest.sizes, manifest.bench or {}
    timed = {r["runtime"]: r for r in bench.get("results", [])}

    def row(name: str, artifact: bool, size_bytes: int, result: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": name,
            "artifact": artifact,
            "size_mb": size_bytes / 1e6,
            "p50_ms": result.get("p50_ms"),
            "p90_ms": result.get("p90_ms"),
            "throughput": result.get("throughput_per_s"),
        }

    return [
        row(f"artifact ({manifest.precision}, ONNX Runtime)", True, sizes.model_bytes, timed.get("onnxruntime", {})),
        row(
            f"source ({manifest.source.model_type}, PyTorch fp32)",
            False,
            sizes.source_weights_bytes,
            timed.get("pytorch fp32", {}),
        ),
    ]


def speed_size_table(manifest: Manifest) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the artifact against its source: latency, throughput, size, and the ratios."""
    rows = speed_size_rows(manifest)
    mine = rows[0]
    number = lambda value: "not measured" if value is None else f"{value:.2f}"  # noqa: E731

    def ratio(row: dict[str, Any], key: str) -> str:
        if row["artifact"] or row[key] is None or not mine[key]:
            return ""
        return f"{row[key] / mine[key]:.2f}x"

    header = ["model", "p50 ms", "p90 ms", "inputs/s", "size MB", "artifact faster by", "artifact smaller by"]
    body = [
        [
            r["name"],
            number(r["p50_ms"]),
            number(r["p90_ms"]),
            number(r["throughput"]),
            f"{r['size_mb']:.2f}",
            ratio(r, "p50_ms"),
            ratio(r, "size_mb"),
        ]
        for r in rows
    ]
    return header, body


def speed_size_plot_png(rows: list[dict[str, Any]]) -> bytes:
    """Latency p50 (where measured) and size of the artifact next to the source model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (latency, size) = plt.subplots(1, 2, figsize=(9, 2.8), dpi=100)
    color = lambda row: _ARTIFACT_COLOR if row["artifact"] else _SOURCE_COLOR  # noqa: E731
    timed = [r for r in rows if r["p50_ms"] is not None]
    bars = latency.barh([r["name"] for r in timed], [r["p50_ms"] for r in timed], color=[color(r) for r in timed])
    latency.bar_label(bars, labels=[f"{r['p50_ms']:.2f}" for r in timed], fontsize=8)
    latency.set_xlabel("latency p50 (ms)")
    bars = size.barh([r["name"] for r in rows], [r["size_mb"] for r in rows], color=[color(r) for r in rows])
    size.bar_label(bars, labels=[f"{r['size_mb']:.2f}" for r in rows], fontsize=8)
    size.set_xlabel("size (MB)")
    for ax in (latency, size):
        ax.invert_yaxis()
        ax.margins(x=0.25)
    fig.suptitle("Against the source model")
    fig.tight_layout()
    return figure_png(fig)


def bench_note(manifest: Manifest) -> str:
    """How the latencies were measured, or how to measure them."""
    bench = manifest.bench
    if not bench:
        return "Latency not measured yet: `edgec bench ARTIFACT --baseline pytorch` measures it and adds it here."
    c = bench["config"]
    threads = (
        c.get("threads") or (bench.get("session") or {}).get("intra_op_threads") or "all"
    )  # None: the session settings
    loads = [r["other_load"] for r in bench.get("results", []) if r.get("other_load") is not None]
    busy = f" Other processes took {max(loads):.0%} of the CPU while it timed." if loads else ""
    return (
        f"edgec bench: batch {c['batch']}, sequence {c['seq_len']}, {threads} threads, {c['runs']} runs after "
        f"{c['warmup']} warm-up, on {bench.get('host', 'this machine')}.{busy}"
    )
