"""RESULTS.md sections of the prune-quality benchmark, written from results-prune-quality.json alone."""

from __future__ import annotations

import prune_data

METRIC = {"sequence-classification": "accuracy %", "feature-extraction": "Spearman x100"}
STUDY_TITLES = {
    "tuning": "Mask tuning: what each change to the least squares does (calibration 256, rearranged plan)",
    "ablation": "Ablation: each part of the method, added in turn",
    "calibration": "Calibration size: task metric and pruning time, each text's share of the Fisher capped (the default) "
    "and not",
    "steps": "Pruning in steps: each step re-scores and re-tunes what the step before left (no retraining)",
    "fit": "What mask tuning fits: a scale per kept unit (Kwon), or each sub-layer's whole output projection (K-prune), "
    "at three ridges towards the current weight",
    "cap": "The cap on each calibration text's share of the Fisher: the quantile of the texts' squared gradient norms",
    "draws": "Calibration draws: the defaults on five different draws of the calibration texts",
    "table": "Pruning at the default settings",
}


def _rows(results: dict, study: str, case: str | None = None) -> list[dict]:
    return [r for r in results["rows"] if r["study"] == study and (case is None or r["case"] == case)]


def _drop(row: dict, role: str) -> str:
    """The change from the unpruned model on the same split (negative: a loss); on the reported split, with the
    half-width of its 95% interval where the row recorded how many predictions changed."""
    change = row[role] - row["unpruned"][role]
    noise = drop_interval(change, row.get("report_agreement"), row.get("report_examples")) if role == "report" else None
    return f"{change:+.2f}" + ("" if noise is None else f" ±{noise:.2f}")


def drop_interval(change: float, agreement: float | None, examples: int | None) -> float | None:
    """Half-width, in points, of a 95% normal interval for an accuracy change measured on `examples` texts, paired
    with the unpruned model's predictions on the same texts.

    Per text the change is +1, -1 or 0 (fixed, broken, neither), so its variance is the share that flipped minus
    the squared mean change. Predictions that changed (1 - agreement) bound the flips from above (with two classes
    they are the flips), so the interval is exact for SST-2 and conservative for CLINC150's 150 classes."""
    if agreement is None or not examples:
        return None
    mean = change / 100.0
    return 196.0 * max((1.0 - agreement) - mean**2, 0.0) ** 0.5 / examples**0.5


def _of_finetune(row: dict, run: dict) -> bool:
    """Whether a row pruned this fine-tuning run's model (its unpruned validation score is the run's best)."""
    return abs(row["unpruned"]["validation"] - run["record"]["best_score"]) <= 1e-9


def _variant(results: dict, row: dict) -> str:
    """The row's variant, marked where it pruned an earlier fine-tune of its case than the one cached now (the
    fine-tuning table's): a case fine-tuned again keeps the rows measured on the model before."""
    run = results["finetune"].get(row["case"])
    earlier = run is not None and not _of_finetune(row, run)
    return (
        f"{row['variant']} (earlier fine-tune: {row['unpruned']['validation']:.2f} validation)"
        if earlier
        else row["variant"]
    )


def _cap(row: dict) -> str:
    """The quantile each text's share of the Fisher was capped at; rows measured before the cap existed had none."""
    clip = row.get("importance_clip")
    return "none" if clip is None else f"{clip:g} ({row['importance_capped']})"


def _fit(row: dict) -> str:
    """What mask tuning fitted; rows measured before weight refits existed fitted unit scales."""
    tuning = row.get("tuning")
    return "none" if tuning is None else tuning.get("fit", "scales")


def finetune_table(results: dict) -> list[str]:
    lines = [
        "| case | train examples | steps | stopped by | validation at start | best validation (step) | wall time | unpruned on the reported split |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, run in results["finetune"].items():
        record = run["record"]
        reported = next(
            (r["unpruned"]["report"] for r in results["rows"] if r["case"] == name and _of_finetune(r, run)),
            None,
        )  # from a row of this fine-tune, not an earlier one
        lines.append(
            f"| {name} | {record['train_examples']} | {record['steps']} | {record['stopped']} | {record['start_score']:.2f} | "
            f"{record['best_score']:.2f} ({record['best_step']}) | {run['wall_seconds'] / 60:.1f} min | "
            f"{'' if reported is None else f'{reported:.2f}'} |"
        )
    return lines


def study_table(results: dict, study: str) -> list[str]:
    """One table per study: every case and fraction, with the validation split beside the reported one."""
    rows = _rows(results, study)
    lines = [
        "| case | prune | variant | calib texts | Fisher cap (texts capped) | steps | tuning fits | validation | drop | reported split | "
        "drop (±95%) | output error | fit error before -> after | fits applied | MACs kept | layers removed | prune s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fits = (
            f"{r['fit_error_before']:.4f} -> {r['fit_error_after']:.4f}"
            if r.get("fit_error_before") is not None
            else ""
        )
        lines.append(
            f"| {r['case']} | {r['fraction']:g} | {_variant(results, r)} | {r['calibration']} | {_cap(r)} | {r.get('steps', 1)} | {_fit(r)} | {r['validation']:.2f} | "
            f"{_drop(r, 'validation')} | "
            f"{r['report']:.2f} | {_drop(r, 'report')} | {r['output_error']:.4f} | {fits} | {r['fits_applied']}/{r['fits']} | "
            f"{r['macs_kept']:.3f} | {','.join(map(str, r['layers_removed'])) or '-'} | {r['prune_seconds']:.0f} |"
        )
    return lines


def int8_table(results: dict) -> list[str]:
    lines = [
        "| case | prune | variant | reported split, int8 | unpruned fp32 | drop (±95%) | validation, int8 | build s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in _rows(results, "int8"):
        lines.append(
            f"| {r['case']} | {r['fraction']:g} | {_variant(results, r)} | {r['report']:.2f} | {r['unpruned']['report']:.2f} | "
            f"{_drop(r, 'report')} | "
            f"{r['validation']:.2f} | {r['build_seconds']:.0f} |"
        )
    return lines


def draws_summary(results: dict) -> list[str]:
    """Per case and fraction, the drop averaged over the calibration draws, with its spread: what one draw's luck
    moves, which a single row cannot show."""
    groups: dict[tuple[str, float], list[dict]] = {}
    for row in _rows(results, "draws"):
        groups.setdefault((row["case"], row["fraction"]), []).append(row)
    lines = [
        "| case | prune | draws | validation drop, mean (min / max) | reported drop, mean (min / max) | reported drop's standard deviation across draws |",
        "|---|---|---|---|---|---|",
    ]
    for (case, fraction), rows in sorted(groups.items()):
        cells = []
        for role in ("validation", "report"):
            drops = [r[role] - r["unpruned"][role] for r in rows]
            mean = round(_mean(drops), 2) + 0.0  # + 0.0: a mean that rounds to zero prints +0.00, not -0.00
            cells.append(f"{mean:+.2f} ({min(drops):+.2f} / {max(drops):+.2f})")
        report = [r["report"] - r["unpruned"]["report"] for r in rows]
        spread = (sum((d - _mean(report)) ** 2 for d in report) / max(len(report) - 1, 1)) ** 0.5
        lines.append(f"| {case} | {fraction:g} | {len(rows)} | {cells[0]} | {cells[1]} | {spread:.2f} |")
    return lines + [""]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def memory_table(results: dict) -> list[str]:
    lines = [
        "| case | prune | calibration texts | peak RSS GiB | wall (whole command) | importance s | search s | tuning s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in _rows(results, "memory"):
        s = r["stage_seconds"]
        lines.append(
            f"| {r['case']} | {r['fraction']:g} | {r['calibration']} | {r['peak_rss_gib']:.2f} | {r['wall']} | "
            f"{s['importance']:.0f} | {s['search']:.1f} | {s['tuning']:.0f} |"
        )
    return lines


def markdown(results: dict, versions: dict) -> str:
    cases = ", ".join(f"{c.name} ({METRIC[c.task]} on {c.report_split})" for c in prune_data.CASES.values())
    lines = [
        "## Pruning that keeps accuracy: fine-tuned classifiers and mpnet on STS-B, no retraining",
        "",
        "Machine (every run): "
        + "; ".join(sorted({r["machine"] for r in [*results["rows"], *results["finetune"].values()]}))
        + ". Versions: "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + ".",
        "Script: `benchmarks/prune_quality.py` (commands in each table's note; every row is in `results-prune-quality.json`).",
        f"Cases: {cases}. Fine-tuning keeps its best checkpoint and stops early on a validation split carved out of train "
        "(SST-2: 2,000 train sentences held out; CLINC150: its val split), and every pruning setting was chosen on that split "
        "(STS-B: dev); the reported split (SST-2 dev, CLINC150 test, STS-B test) selected nothing. Calibration texts are labelled "
        "train texts (STS-B: train sentences). 'drop' is against the unpruned fine-tuned model on the same split; 'output error' "
        "is the relative squared error of the encoder's last hidden states (classifiers: the first token, which the head reads; "
        "embeddings: every token) against the unpruned model's, on 512 validation texts. A classifier's drop on the reported "
        "split carries the half-width of its 95% interval (paired with the unpruned model's predictions; rows measured "
        "before predictions were compared have none): SST-2 dev has 872 sentences, one of them 0.11 points.",
        "",
        "### Fine-tuning (`python benchmarks/prune_quality.py finetune --case CASE`)",
        "",
        *finetune_table(results),
        "",
    ]
    for study, title in STUDY_TITLES.items():
        if _rows(results, study):
            lines += [
                f"### {title} (`python benchmarks/prune_quality.py prune --study {study} --case CASE ...`)",
                "",
                *study_table(results, study),
                "",
                *(draws_summary(results) if study == "draws" else []),
            ]
    if _rows(results, "int8"):
        lines += [
            "### After static int8 (`python benchmarks/prune_quality.py int8 --case CASE --fractions F`)",
            "",
            *int8_table(results),
            "",
        ]
    if _rows(results, "memory"):
        lines += [
            "### Peak memory and time of `edgec prune` (`python benchmarks/prune_quality.py memory --case CASE --sizes N`)",
            "",
            *memory_table(results),
            "",
        ]
    return "\n".join(lines)
