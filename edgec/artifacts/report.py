"""report.md and report.html for an artifact: what was built, sizes, fused ops, and the parity ledger."""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgec.artifacts.stage_notes import DistillNote, MobileEmitNote, PruneNote, TensorRTEmitNote
from edgec.running.profiling import NODE_HEADER, OPERATOR_HEADER, Profile, node_rows, operator_rows

if TYPE_CHECKING:
    from edgec.artifacts.manifest import Manifest, ParityRecord
    from edgec.parity.ledger import ParityRow

# Metrics shown per ledger row, in this order, where the task produces them.
LEDGER_COLUMNS = (
    "cosine_mean",
    "cosine_min",
    "similarity_corr_mean",
    "similarity_corr_min",
    "spearman",
    "agreement",
    "kl",
    "accuracy",
    "max_abs_error",
    "mean_abs_error",
)


def ledger_table(manifest: Manifest) -> tuple[list[str], list[list[str]]]:
    """Header and rows of an artifact's parity ledger, formatted for humans."""
    return format_ledger(manifest.parity.ledger, manifest.parity.reference_metric)


def format_ledger(rows: Sequence[ParityRow], reference: dict[str, float]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of ledger rows, the reference's own metric first."""
    columns = [c for c in LEDGER_COLUMNS if any(c in r.metrics for r in rows)]
    header = ["stage", *columns, "stage time", "verdict"]
    body = []
    if reference:
        body.append(["reference (PyTorch fp32)", *[format_value(reference.get(c)) for c in columns], "", ""])
    for row in rows:
        verdict = "pass" if not row.failures else "FAIL: " + "; ".join(row.failures)
        stage = row.stage + (" (simulated)" if row.simulated else "") + (" (width-free)" if row.comparison else "")
        values = [format_value(row.metrics.get(c)) for c in columns]
        body.append([stage, *values, f"{row.seconds:.1f} s", verdict])
    return header, body


def comparison_note(rows: Sequence[ParityRow]) -> str | None:
    """Why some rows were not compared with the reference value by value (ParityRow.comparison), once per reason."""
    reasons = sorted({r.comparison for r in rows if r.comparison})
    return " ".join(f"{', '.join(r.stage for r in rows if r.comparison == c)}: {c}." for c in reasons) or None


_STATISTICS = ("max_abs", "mean_abs", "median_abs", "q_abs", "max_rel", "mean_rel", "median_rel")


def statistics_table(metrics: dict[str, float]) -> tuple[list[str], list[list[str]]]:
    """Per-output error statistics (`output.max_abs` ... keys of a ledger row), one row per output; empty if none."""
    outputs = sorted({key.rsplit(".", 1)[0] for key in metrics if "." in key})
    header = ["output", *(s.replace("q_abs", "p99_abs") for s in _STATISTICS)]
    return header, [[name, *(format_value(metrics.get(f"{name}.{s}")) for s in _STATISTICS)] for name in outputs]


def format_value(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.2f}" if abs(value) >= 10 else f"{value:.4f}" if abs(value) >= 1e-3 else f"{value:.2e}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def summary_rows(manifest: Manifest) -> list[tuple[str, str]]:
    """Key facts of a build, as (label, value) pairs."""
    sizes = manifest.sizes
    parity = manifest.parity
    notes = manifest.stages
    rows = [
        ("source", f"{manifest.source.path} ({manifest.source.model_type}, {manifest.task})"),
        ("target / precision", f"{manifest.target.name} / {manifest.precision}"),
        (
            "model file",
            f"{manifest.model_file}: {sizes.model_bytes / 1e6:.1f} MB (source weights {sizes.source_weights_bytes / 1e6:.1f} MB)",
        ),
        (
            "fused ops",
            ", ".join(f"{k} {v}" for k, v in (notes.optimize.fused_ops if notes.optimize else {}).items()) or "none",
        ),
        ("eval data", eval_data_row(parity)),
        ("parity", ("passed" if parity.passed else "FAILED") + _simulated_note(parity.ledger)),
    ]
    if notes.target:
        rows.insert(1, ("target choice", notes.target))
    if manifest.session:
        rows.insert(2, ("instruction set / session", session_summary(manifest)))
    if manifest.engine and isinstance(notes.emit, TensorRTEmitNote):
        rows += tensorrt_rows(notes.emit, manifest.engine)
    if isinstance(notes.emit, MobileEmitNote):
        rows += mobile_rows(notes.emit)
    if notes.quantize:
        settings = notes.quantize.to_json().items()
        rows.append(("quantization", ", ".join(f"{k}={v}" for k, v in settings if not isinstance(v, (list, dict)))))
    if counts := notes.int8_matmuls():
        against = notes.fallback.against if notes.fallback else None
        judged = f" (the fallback judged int8 against {against})" if against else ""
        rows.append(("weight MatMuls in int8", f"{counts[0]} of {counts[1]}{judged}"))
    if notes.fallback and notes.fallback.kept_in_float:
        rows.append(("kept in float (sensitive)", ", ".join(notes.fallback.kept_in_float)))
    if notes.prune:
        rows += pruning_rows(notes.prune)
    if notes.distill:
        rows.append(distillation_row(notes.distill))
    return rows


def session_summary(manifest: Manifest) -> str:
    """The instruction set the artifact is for, the build host's, and the ONNX Runtime settings chosen."""
    settings, built_on = manifest.session.settings, manifest.host
    knobs = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(settings).items())
    return (
        f"{manifest.instruction_set} (built on {built_on.get('model')}, {built_on.get('instruction_set')}); "
        f"{knobs}; chosen by {manifest.session.chosen_by}"
    )


def eval_data_row(parity: ParityRecord) -> str:
    """What the gate judged, and what selecting stages chose on (a disjoint part of --eval)."""
    selection = parity.selection_examples
    split = f"; {selection} more chosen on by fallback/distillation, never judged" if selection else ""
    carried = f"; {parity.golden['examples']} carried as the golden sample" if parity.golden else ""
    return f"{parity.eval_data}: gate judged {parity.eval_examples} examples{split}{carried}"


def _simulated_note(ledger: Sequence[ParityRow]) -> str:
    if ledger and ledger[-1].simulated:
        return " (simulated: ONNX Runtime CPU ran the model the engine is built from; no engine ran)"
    return ""


def tensorrt_rows(emit: TensorRTEmitNote, engine: dict[str, Any]) -> list[tuple[str, str]]:
    """What a TensorRT build wrote and whether the engine itself exists."""
    shapes = lambda axis: "/".join(str(next(iter(emit.profile.values()))[k][axis]) for k in ("min", "opt", "max"))  # noqa: E731
    typing = emit.typing
    fp32 = ", ".join(f"{k} {v}" for k, v in typing["fp32_nodes"].items()) if typing else ""
    types = f"fp16 {typing['fp16_nodes']} nodes, fp32 {fp32}" if typing else "fp32"
    spec = (
        f"{emit.spec}, {emit.script}; strongly typed ({types}); "
        f"profile min/opt/max batch {shapes(0)}, sequence {shapes(1)}"
    )
    if engine["file"]:
        state = (
            f"built: {engine['file']} ({engine['engine_bytes'] / 1e6:.1f} MB) with TensorRT {engine['tensorrt']} "
            f"on {engine['device']} in {engine['seconds']:.0f} s"
        )
    else:
        state = f"{engine['status']}; build it with {engine['build_with']}"
    if engine.get("rejected"):
        state += f"; a later build failed parity and is kept as {engine['rejected']['file']}"
    warnings = emit.preflight_warnings
    return [
        ("TensorRT spec", spec),
        ("TensorRT engine", state),
        ("TensorRT preflight", "; ".join(w.rstrip(".") for w in warnings) if warnings else "no hazards found"),
    ]


def mobile_rows(emit: MobileEmitNote) -> list[tuple[str, str]]:
    """What a mobile bundle holds and how much of it ORT's mobile accelerators could take."""
    return [
        (
            "ORT format",
            f"{emit.model} ({emit.conversion}); {emit.operator_config} for a reduced ONNX Runtime build "
            f"({len(emit.operator_counts)} operator types)",
        ),
        (
            "mobile usability (ORT's check)",
            "; ".join(f"{ep}: {verdict}" for ep, verdict in emit.usability.items())
            + " (details in mobile_usability.json)",
        ),
    ]


def distillation_row(note: DistillNote) -> tuple[str, str]:
    """How distillation went, from its stage note (the last run; an iterative schedule lists every run's steps)."""
    runs = note.runs or [note]
    steps = " + ".join(str(run.steps) for run in runs)
    ranks = note.ranks
    each = ", ".join(f"rank {r['rank']}: {r['micro_batches']} micro-batches" for r in ranks)
    text = (
        f"{steps} steps in {sum(run.seconds for run in runs):.0f} s, best at step {note.best_step} "
        f"(score {note.best_score:.4f}), stopped by {note.stopped}"
    )
    text += f" on {len(ranks)} processes ({each})" if len(ranks) > 1 else ""
    cache = note.teacher_cache
    if cache:
        text += (
            f"; teacher run once over {cache['examples']} of {cache['given']} texts in {cache['seconds']:.0f} s "
            f"({cache['megabytes']:.0f} MB cached)"
        )
    return ("distillation", text)


def pruning_rows(summary: PruneNote) -> list[tuple[str, str]]:
    """What pruning removed: compute, parameters, what each layer kept, and which layers went."""
    heads, ffn = kept_per_layer(summary)
    per_layer = lambda kept, before: " ".join("-" if k is None else f"{k}/{b}" for k, b in zip(kept, before))  # noqa: E731
    removed = summary.layers_removed
    return [
        (
            "encoder MACs per text",
            f"{summary.macs_before / 1e6:.1f} M -> {summary.macs_after / 1e6:.1f} M "
            f"(-{1 - summary.macs_after / summary.macs_before:.1%}, at {summary.mean_tokens} tokens)",
        ),
        ("parameters", f"{summary.params_before:,} -> {summary.params_after:,}"),
        ("layers removed", f"{', '.join(map(str, removed))} (of 0-{len(heads) - 1}; '-' below)" if removed else "none"),
        ("heads kept per layer", per_layer(heads, summary.heads_before)),
        ("FFN neurons kept per layer", per_layer(ffn, summary.ffn_before)),
        *(
            [("hidden size", f"{summary.hidden_before} -> {summary.hidden_after}")]
            if summary.hidden_after != summary.hidden_before
            else []
        ),
        *(
            [("importance", f"{summary.calibration_texts} calibration texts, {capped} with their share capped")]
            if (capped := summary.importance_capped) is not None
            else []
        ),
        ("pruning time", ", ".join(f"{k} {v:.1f} s" for k, v in summary.seconds.items())),
    ]


def kept_per_layer(summary: PruneNote) -> tuple[list[int | None], list[int | None]]:
    """Heads and FFN neurons kept, in the unpruned model's layer numbering (None: the layer was removed)."""
    layers = len(summary.heads_before)
    kept = summary.layers_kept if summary.layers_kept is not None else list(range(layers))
    heads: list[int | None] = [None] * layers
    ffn: list[int | None] = [None] * layers
    for position, index in enumerate(kept):
        heads[index], ffn[index] = summary.heads_after[position], summary.ffn_after[position]
    return heads, ffn


def pruning_plot_png(summary: PruneNote) -> bytes:
    """Heat map of the share of heads and FFN neurons each layer kept (removed layers marked x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    kept = kept_per_layer(summary)
    share = lambda values, before: [(v or 0) / b if b else 0.0 for v, b in zip(values, before)]  # noqa: E731
    grid = np.array([share(kept[0], summary.heads_before), share(kept[1], summary.ffn_before)])
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * grid.shape[1] + 2), 2.2), dpi=100)
    image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for (row, col), value in np.ndenumerate(grid):
        count = kept[row][col]
        ax.text(
            col,
            row,
            "x" if count is None else str(count),
            ha="center",
            va="center",
            color="white" if value < 0.6 else "black",
            fontsize=8,
        )
    ax.set_yticks([0, 1], ["heads", "FFN"])
    ax.set_xticks(range(grid.shape[1]), [str(i) for i in range(grid.shape[1])])
    ax.set_xlabel("layer")
    ax.set_title(f"Kept per layer (prune {summary.fraction})")
    fig.colorbar(image, ax=ax, label="share kept")
    fig.tight_layout()
    return figure_png(fig)


def figure_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


_CLOSENESS = ("cosine_mean", "similarity_corr_mean", "agreement")
"""What a row's closeness to the reference is, in this order: a narrower embedding has no cosine (parity.ledger)."""


def parity_plot_png(manifest: Manifest) -> bytes:
    """The ledger per stage: closeness to the reference (mean cosine, a narrower embedding's mean similarity
    correlation, or top-1 agreement) against its threshold and,
    where the data has scores or labels, the task metric's drop against max_drop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parity = manifest.parity
    rows, thresholds, reference = parity.ledger, parity.thresholds, parity.reference_metric
    stages = [r.stage for r in rows]
    colors = ["#2a9d8f" if not r.failures else "#e76f51" for r in rows]
    fig, axes = plt.subplots(1, 2 if reference else 1, figsize=(11 if reference else 6, 3.2), dpi=100, squeeze=False)
    metric = next((m for m in _CLOSENESS if any(m in r.metrics for r in rows)), "agreement")
    values = [r.metrics.get(metric, float("nan")) for r in rows]  # a row that failed before measuring has none
    threshold = thresholds.min_agreement if metric == "agreement" else thresholds.min_cosine
    ax = axes[0][0]
    ax.bar_label(ax.bar(stages, values, color=colors), labels=[f"{v:.5f}" for v in values], fontsize=7)
    lowest = min((v for v in values if math.isfinite(v)), default=1.0)
    bottom = min(lowest - 0.01, 0.95)
    # A threshold far below the data (a measure-only build's -1) would squash every bar into a sliver.
    if threshold is not None and threshold >= bottom - 0.05:
        bottom = min(bottom, threshold - 0.01)
        ax.axhline(threshold, color="#444", linestyle="--", linewidth=1, label=f"threshold {threshold}")
        ax.legend(loc="lower left")
    elif threshold is not None:
        _off_chart_note(ax, f"threshold {threshold}: below the chart")
    ax.set_ylabel(f"{metric} vs fp32 reference")
    ax.set_ylim(bottom, 1 + 0.08 * (1 - bottom))  # head room for the value labels under the title
    ax.set_title(f"Closeness per stage ({manifest.precision})")
    if reference:
        name, before = next(iter(reference.items()))
        drops = [before - r.metrics.get(name, float("nan")) for r in rows]
        ax = axes[0][1]
        ax.bar_label(ax.bar(stages, drops, color=colors), labels=[f"{d:+.2f}" for d in drops], fontsize=7)
        shown = [d for d in drops if math.isfinite(d)] + [0.0]
        if thresholds.max_drop is not None and thresholds.max_drop <= 3 * max(max(map(abs, shown)), 1.0):
            shown.append(thresholds.max_drop)
            limit = thresholds.max_drop
            ax.axhline(limit, color="#444", linestyle="--", linewidth=1, label=f"max_drop {limit}")
            ax.legend(loc="upper left")
        elif thresholds.max_drop is not None:
            _off_chart_note(ax, f"max_drop {thresholds.max_drop}: above the chart")
        ax.axhline(0, color="#999", linewidth=0.8)
        pad = 0.25 * ((max(shown) - min(shown)) or 1.0)  # room for the value labels above and below the bars
        ax.set_ylim(min(shown) - pad, max(shown) + pad)
        ax.set_ylabel(f"{name} drop (points)")
        ax.set_title(f"{name} drop per stage (reference {before:.2f})")
    for ax in axes[0]:
        ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    return figure_png(fig)


def _off_chart_note(ax, text: str) -> None:
    ax.set_xlabel(text, fontsize=8, color="#444")


def sweep_plot_png(rows: list[dict[str, Any]]) -> bytes:
    """Task metric against latency, one bubble per artifact (area ~ file size), the Pareto front joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    sizes = [max(r["size_mb"], 0.01) for r in rows]
    scale = 900.0 / max(sizes)
    ax.scatter(
        [r["latency_ms"] for r in rows],
        [r["value"] for r in rows],
        s=[20 + s * scale for s in sizes],
        c=["tab:orange" if r["pareto"] else "tab:blue" for r in rows],
        alpha=0.6,
        edgecolors="black",
    )
    for r in rows:
        ax.annotate(r["name"], (r["latency_ms"], r["value"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    front = sorted((r["latency_ms"], r["value"]) for r in rows if r["pareto"])
    ax.plot([p[0] for p in front], [p[1] for p in front], color="tab:orange", linewidth=1, label="Pareto front")
    ax.set_xlabel("latency ms (p50, this machine)")
    ax.set_ylabel(rows[0]["metric"])
    ax.set_title("edgec sweep: metric vs latency (bubble area ~ file size)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return figure_png(fig)


def profile_caption(profile: Profile, config: dict[str, Any]) -> str:
    return (
        f"ONNX Runtime's profiler on this build machine, batch {config['batch']}, {config['seq_len']} tokens, "
        f"{profile.runs} runs after warm-up: {profile.kernel_ms:.2f} ms of kernels per run. `edgec bench --profile` "
        "measures it again wherever the artifact runs."
    )


def write_reports(folder: Path, manifest: Manifest, profile: tuple[Profile, dict[str, Any]] | None = None) -> None:
    """Write report.md, report.html and the charts: parity.png, and pruning.png, sensitivity.png and speed.png where
    they apply; `profile` (with its bench config) adds where the time goes."""
    from edgec.artifacts import report_html as page
    from edgec.artifacts.report_sections import (
        bench_note,
        gate_rows,
        sensitivity_plot_png,
        sensitivity_rows,
        speed_size_plot_png,
        speed_size_rows,
        speed_size_table,
    )

    notes = manifest.stages
    charts = {"parity.png": ("parity per stage", parity_plot_png(manifest))}
    if notes.prune:
        charts["pruning.png"] = ("kept per layer", pruning_plot_png(notes.prune))
    if notes.fallback and notes.fallback.sensitivity:
        charts["sensitivity.png"] = ("int8 sensitivity per node", sensitivity_plot_png(notes.fallback))
    if manifest.bench:
        charts["speed.png"] = ("latency and size against the source", speed_size_plot_png(speed_size_rows(manifest)))
    for name, (_, png) in charts.items():
        (folder / name).write_bytes(png)
    title = f"edgec artifact: {manifest.target.name} / {manifest.precision}"
    summary, gates = summary_rows(manifest), (["gate", "final artifact", "threshold", "verdict"], gate_rows(manifest))
    ledger = ledger_table(manifest)
    statistics = statistics_table(manifest.parity.ledger[-1].metrics)
    speed, speed_note = speed_size_table(manifest), bench_note(manifest)
    sensitivity = None
    if notes.fallback and "sensitivity.png" in charts:
        sensitivity = (["MatMul", "error alone in int8", "kept in float"], sensitivity_rows(notes.fallback))
    sections = [  # (title, tables, note, charts)
        ("Parity gate", [gates], None, []),
        (
            "Parity ledger",
            [ledger] + ([statistics] if statistics[1] else []),
            comparison_note(manifest.parity.ledger),
            ["parity.png"],
        ),
        ("Speed and size against the source", [speed], speed_note, ["speed.png"] if "speed.png" in charts else []),
        *([("int8 fallback: per-node sensitivity", [sensitivity], None, ["sensitivity.png"])] if sensitivity else []),
        *([("Pruning", [], None, ["pruning.png"])] if "pruning.png" in charts else []),
        *(
            [
                (
                    "Where the time goes",
                    [(OPERATOR_HEADER, operator_rows(profile[0])), (NODE_HEADER, node_rows(profile[0]))],
                    profile_caption(*profile),
                    [],
                )
            ]
            if profile
            else []
        ),
    ]
    md = [f"# {title}", "", *(f"- **{k}**: {v}" for k, v in summary)]
    for heading, tables, text, images in sections:
        md += ["", f"## {heading}", ""] + [markdown_table(*t) + "\n" for t in tables]
        md += [text, ""] if text else []
        md += [f"![{charts[name][0]}]({name})" for name in images]
    (folder / "report.md").write_text("\n".join(md) + "\n")
    blocks = [page.facts(summary)] + [
        page.section(
            heading,
            *(page.table(*t) for t in tables),
            *([page.note(text)] if text else []),
            *(page.image(charts[name][0], charts[name][1]) for name in images),
        )
        for heading, tables, text, images in sections
    ]
    (folder / "report.html").write_text(page.page(title, *blocks))
