"""Pruning that keeps accuracy, in Kwon et al.'s own setting: fine-tuned classifiers, pruned without retraining.

    python benchmarks/prune_quality.py finetune --case minilm-sst2     # edgec finetune, cached, timed
    python benchmarks/prune_quality.py prune --case minilm-sst2 --save # fractions x ablation rows, fp32
    python benchmarks/prune_quality.py prune --case minilm-sst2 --study calibration  # 256/1,024/2,048 texts, capped or not
    python benchmarks/prune_quality.py prune --case minilm-sst2 --study cap --sizes 1024  # the Fisher cap's quantile
    python benchmarks/prune_quality.py prune --case minilm-sst2 --study steps --sizes 1024  # pruning in 1, 2, 4 steps
    python benchmarks/prune_quality.py prune --case minilm-sst2 --study fit --sizes 1024  # unit scales or whole weights
    python benchmarks/prune_quality.py prune --case minilm-sst2 --study draws --fractions 0.4  # 5 calibration draws
    python benchmarks/prune_quality.py int8 --case minilm-sst2 --fractions 0,0.4   # int8 of the saved folders (0: unpruned)
    python benchmarks/prune_quality.py render                          # RESULTS.md sections from the JSON

Cases (benchmarks/prune_data.py): MiniLM and mpnet fine-tuned on SST-2, MiniLM fine-tuned on CLINC150 (the whole
encoder), and pretrained mpnet on STS-B as the embedding case. Fine-tuning and every pruning setting are chosen
on a validation split carved out of train; the tables report SST-2 dev, CLINC150 test and STS-B test.
Each invocation does one case and merges its rows into results-prune-quality.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models  # noqa: E402
import prune_data  # noqa: E402
import prune_report  # noqa: E402
from prune_measure import ROLES, Scorer, calibrate, prune_row, split_scores  # noqa: E402
from run import machine, write_section  # noqa: E402

import edgec  # noqa: E402
from edgec.artifacts.artifact import package_versions  # noqa: E402
from edgec.parity.runtime import measure_model  # noqa: E402
from edgec.recipe import PruneConfig, TuningConfig  # noqa: E402
from edgec.source import (  # noqa: E402
    load_source,
    save_pruned,
)
from edgec.sweep import MEASURE_ONLY  # noqa: E402
from edgec.targets import SessionSettings  # noqa: E402

RESULTS = HERE / "results-prune-quality.json"
PRUNED = models.WORK / "pruned"
BEFORE = TuningConfig(
    target="unpruned", ridge="relative", fit_bias=True, stop_on_failure=False, cls_only=False, space="pre-norm"
)
KWON = TuningConfig(
    target="schedule", ridge="to-one", fit_bias=False, stop_on_failure=True, cls_only=True, space="pre-norm"
)
SCALES = TuningConfig(fit="scales")  # unit scales, as every row of the tuning study measured them
# Kwon et al.'s four differences from edgec's former least squares, added one at a time; then the default (chosen on
# validation from those rows) and the post-norm objective as alternatives to it.
TUNING_STEPS = (
    ("edgec before: unpruned target, relative ridge, bias fitted", BEFORE),
    ("+ schedule target (sqrt of the kept share)", dataclasses.replace(BEFORE, target="schedule")),
    ("+ ridge to one, damp 1", dataclasses.replace(BEFORE, target="schedule", ridge="to-one")),
    ("- bias fit", dataclasses.replace(BEFORE, target="schedule", ridge="to-one", fit_bias=False)),
    ("+ stop at the first failed layer", dataclasses.replace(KWON, cls_only=False)),
    ("+ CLS token only in the last FFN (= Kwon)", KWON),
    ("default: Kwon's, relative ridge, failed layers skipped, not stopping", SCALES),
    ("default, post-norm error", dataclasses.replace(SCALES, space="post-norm")),
)

CAPS = (None, 0.9, 0.99, 0.999)
WEIGHT_DAMPINGS = (1e-3, 1e-2, 1e-1)
DEFAULT = PruneConfig(fraction=0.5)  # its calibration, cap and steps are the defaults the studies vary
DRAWS = 5  # calibration draws of the draws study: how much one draw's luck moves a row at the defaults


def load_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {"finetune": {}, "rows": []}


def save_results(results: dict) -> None:
    partial = RESULTS.with_suffix(".partial")
    partial.write_text(json.dumps(results, indent=1) + "\n")
    partial.replace(RESULTS)


def finetuned(case: prune_data.Case) -> Path:
    """The fine-tuned folder of a case (trained on first use, cached in benchmarks/work/finetuned/)."""
    if case.finetune is None:
        return getattr(models, case.model)()
    folder = prune_data.FINETUNED / case.name
    if (folder / "edgec_finetune.json").is_file():
        return folder
    train_file, validation_file = prune_data.split_files(case)
    cli = [
        sys.executable,
        "-m",
        "edgec",
        "finetune",
        str(getattr(models, case.model)()),
        "--data",
        str(train_file),
        "--eval",
        str(validation_file),
        "--task",
        case.task,
        *case.finetune.options(),
        "--out",
        str(folder),
    ]
    started = time.perf_counter()
    subprocess.run(cli, check=True)
    seconds = time.perf_counter() - started
    record = json.loads((folder / "edgec_finetune.json").read_text())
    results = load_results()
    results["finetune"][case.name] = {
        "machine": machine_line(),
        "versions": package_versions(),
        "wall_seconds": round(seconds, 1),
        "command": "edgec finetune MODEL --data train.jsonl --eval validation.jsonl "
        + " ".join(cli[cli.index("--task") : -2]),
        "record": record,
    }
    save_results(results)
    return folder


def study_rows(study: str, fraction: float, sizes: list[int]) -> list[tuple[str, int, PruneConfig, int]]:
    """(variant, calibration texts, config, calibration draw) of every row a study measures at one fraction."""
    if study == "draws":  # the defaults on different draws of the calibration texts (draw 0: every other study's)
        return [(f"draw {seed}", DEFAULT.calib_samples, PruneConfig(fraction=fraction), seed) for seed in range(DRAWS)]
    return [(variant, count, config, 0) for variant, count, config in _one_draw_rows(study, fraction, sizes)]


def _one_draw_rows(study: str, fraction: float, sizes: list[int]) -> list[tuple[str, int, PruneConfig]]:
    if study == "tuning":
        rows = [("no tuning", sizes[0], PruneConfig(fraction=fraction, rescale=False))]
        return rows + [(name, sizes[0], PruneConfig(fraction=fraction, tuning=tuning)) for name, tuning in TUNING_STEPS]
    if study == "ablation":  # each part added in turn; `sizes`: the small calibration, then the default's
        small, large = sizes[0], sizes[-1]
        base = PruneConfig(fraction=fraction, importance_clip=None, steps=1, tuning=SCALES)
        capped = dataclasses.replace(base, importance_clip=DEFAULT.importance_clip)
        stepped = dataclasses.replace(capped, steps=max(2, DEFAULT.steps))
        refit = dataclasses.replace(stepped, tuning=dataclasses.replace(SCALES, fit="weights"))
        return [
            ("importance + search", small, dataclasses.replace(base, rearrange=False, rescale=False)),
            ("+ rearrangement", small, dataclasses.replace(base, rescale=False)),
            ("+ mask tuning", small, base),
            ("+ Fisher cap", small, capped),
            ("+ larger calibration", large, capped),
            (f"+ {stepped.steps} pruning steps", large, stepped),
            ("+ weight refit instead of unit scales", large, refit),
            ("+ layers", large, dataclasses.replace(refit, units=("heads", "ffn", "layers"))),
        ]
    if study == "steps":  # one-shot pruning in 1, 2 and 4 steps, each re-scoring what the last left
        return [
            (f"{k} step{'s' if k > 1 else ''}", sizes[0], PruneConfig(fraction=fraction, steps=k)) for k in (1, 2, 4)
        ]
    if study == "cap":  # the quantile each text's squared gradient norm is capped at (None: no cap)
        return [
            (f"cap {'none' if q is None else f'{q:g}'}", n, PruneConfig(fraction=fraction, importance_clip=q))
            for n in sizes
            for q in CAPS
        ]
    if study == "fit":  # what mask tuning fits: a scale per kept unit, or each sub-layer's whole output projection
        return [("scales", sizes[0], PruneConfig(fraction=fraction, tuning=SCALES))] + [
            (
                f"weights, damping {damping:g}",
                sizes[0],
                PruneConfig(
                    fraction=fraction, tuning=dataclasses.replace(SCALES, fit="weights", weight_damping=damping)
                ),
            )
            for damping in WEIGHT_DAMPINGS
        ]
    if study == "calibration":  # each size with each text's share of the Fisher capped (the default) and not
        return [
            row
            for n in sizes
            for row in (
                (f"{n} texts", n, PruneConfig(fraction=fraction)),
                (f"{n} texts, no cap", n, PruneConfig(fraction=fraction, importance_clip=None)),
            )
        ]
    return [("default", DEFAULT.calib_samples, PruneConfig(fraction=fraction))]


def run_study(
    case: prune_data.Case, study: str, fractions: list[float], sizes: list[int], save: bool, variants: str | None = None
) -> None:
    """Measure one study of one case (`variants`: only the rows whose variant names contain one of its comma-separated parts); its rows replace
    earlier ones of the same case, study, fraction and variant."""
    source = load_source(finetuned(case))
    data = prune_data.splits(case)
    scorer = Scorer.of(source, data)
    unpruned = scorer.unpruned()
    calibrations = {}
    for fraction in fractions:
        for variant, count, config, draw in study_rows(study, fraction, sizes):
            if variants is not None and not any(part in variant for part in variants.split(",")):
                continue
            key = (count, config.importance_clip, draw)
            if key not in calibrations:
                calibrations.clear()  # one importance pass in memory at a time
                calibrations[key] = calibrate(case, source, data, count, config.importance_clip, draw)
            row, result = prune_row(source, calibrations[key], config, scorer)
            row = {"case": case.name, "study": study, "variant": variant, "unpruned": unpruned, **row}
            print(
                json.dumps(
                    {
                        k: row[k]
                        for k in (
                            "case",
                            "variant",
                            "fraction",
                            "calibration",
                            "validation",
                            "report",
                            "output_error",
                            "prune_seconds",
                        )
                    }
                ),
                flush=True,
            )
            if save:
                folder = PRUNED / f"{case.name}-{fraction:g}"
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                save_pruned(dataclasses.replace(source, model=result.model), result.summary, folder)
                row["folder"] = str(folder)
            merge_row(row)


def int8_rows(case: prune_data.Case, fractions: list[float]) -> None:
    """Static int8 ORT artifacts of the saved pruned folders (fraction 0: the unpruned model), scored on the reported split."""
    source = load_source(finetuned(case))
    data = prune_data.splits(case)
    scorer = Scorer.of(source, data)
    calib = prune_data.calibration(case, data, 256).single_texts()
    for fraction in fractions:
        folder = finetuned(case) if fraction == 0 else PRUNED / f"{case.name}-{fraction:g}"
        with tempfile.TemporaryDirectory(prefix="edgec-int8-") as tmp:
            started = time.perf_counter()
            artifact = edgec.build(
                folder,
                "ort-x86",
                recipe=edgec.Recipe(quant=edgec.QuantConfig(precision="int8"), parity=MEASURE_ONLY),
                calib=calib,
                eval=data["validation"].sample(500, 0),
                out=Path(tmp) / "a",
            )
            scores = split_scores(
                {
                    role: measure_model(
                        artifact.model_path, role, case.task, getattr(scorer, role), MEASURE_ONLY, SessionSettings()
                    ).metrics
                    for role in ROLES
                },
                len(scorer.report.dataset.examples),
            )
        row = {
            "case": case.name,
            "study": "int8",
            "variant": "int8",
            "fraction": fraction,
            "unpruned": scorer.unpruned(),
            "build_seconds": round(time.perf_counter() - started, 1),
            **scores,
        }
        print(json.dumps(row), flush=True)
        merge_row(row)


def memory_row(case: prune_data.Case, count: int, fraction: float) -> None:
    """`edgec prune` as a user runs it, under /usr/bin/time -v: peak RSS and wall time at `count` calibration texts."""
    data = prune_data.splits(case)
    folder = prune_data.SPLITS / case.name
    folder.mkdir(parents=True, exist_ok=True)
    texts = prune_data.calibration(case, data, count)
    (folder / "calibration.jsonl").write_text(
        "".join(
            json.dumps({"text": e.text, **({"label": e.label} if e.label is not None else {})}) + "\n"
            for e in texts.examples
        )
    )
    eval_data = data["validation"].sample(200, 0)  # written as an --eval file: the data fields, not the line read
    (folder / "eval200.jsonl").write_text(
        "".join(
            json.dumps({k: v for k, v in dataclasses.asdict(e).items() if v is not None and k != "line"}) + "\n"
            for e in eval_data.examples
        )
    )
    with tempfile.TemporaryDirectory(prefix="edgec-mem-") as tmp:
        cli = [
            "/usr/bin/time",
            "-v",
            sys.executable,
            "-m",
            "edgec",
            "prune",
            str(finetuned(case)),
            "--prune",
            f"{fraction:g}",
            "--calib",
            str(folder / "calibration.jsonl"),
            "--calib-samples",
            str(count),
            "--eval",
            str(folder / "eval200.jsonl"),
            "--max-length",
            "128",
            "--out",
            str(Path(tmp) / "out"),
        ]
        done = subprocess.run(cli, capture_output=True, text=True, check=True)
        pruning = json.loads((Path(tmp) / "out" / "config.json").read_text())["edgec_pruning"]
    peak_kb = int(next(line.split(":")[1] for line in done.stderr.splitlines() if "Maximum resident set size" in line))
    wall = next(line.rsplit(" ", 1)[1] for line in done.stderr.splitlines() if "Elapsed (wall clock)" in line)
    row = {
        "case": case.name,
        "study": "memory",
        "variant": f"edgec prune, {count} texts",
        "fraction": fraction,
        "calibration": count,
        "peak_rss_gib": round(peak_kb / 2**20, 2),
        "wall": wall,
        "stage_seconds": pruning["seconds"],
        "command": f"/usr/bin/time -v edgec prune MODEL --prune {fraction:g} --calib calibration.jsonl --calib-samples {count} --eval eval200.jsonl "
        "--max-length 128 --out OUT",
    }
    print(json.dumps(row), flush=True)
    merge_row(row)


def machine_line() -> str:
    """The CPU, its cores and the instruction set torch's CPU kernels use here."""
    return f"{machine()}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}"


def merge_row(row: dict) -> None:
    """Add a row to the results JSON, replacing an earlier one of the same case, study, fraction and variant."""
    row["machine"] = machine_line()
    results = load_results()
    key = lambda r: (r["case"], r["study"], r["fraction"], r["variant"])  # noqa: E731
    results["rows"] = [r for r in results["rows"] if key(r) != key(row)] + [row]
    save_results(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("finetune", "prune", "int8", "memory", "render"))
    parser.add_argument("--case", choices=sorted(prune_data.CASES))
    parser.add_argument(
        "--study",
        choices=("tuning", "ablation", "calibration", "cap", "steps", "fit", "draws", "table"),
        default="table",
    )
    parser.add_argument("--fractions", default="0.3,0.4,0.5,0.6")
    parser.add_argument("--sizes", default="256,1024,2048", help="calibration texts (ablation: the first and the last)")
    parser.add_argument(
        "--variants", help="only the study's rows whose variant names contain one of these comma-separated texts"
    )
    parser.add_argument(
        "--save", action="store_true", help="keep the pruned folders (benchmarks/work/pruned/) for int8 builds"
    )
    args = parser.parse_args()
    if args.action == "render":
        write_section(
            HERE / "RESULTS.md",
            "prune-quality",
            prune_report.markdown(load_results(), package_versions()),
            "benchmarks/prune_quality.py",
        )
        return
    if args.case is None:
        parser.error("--case is required")
    case = prune_data.CASES[args.case]
    if args.action == "finetune":
        print(finetuned(case))
    elif args.action == "prune":
        run_study(
            case,
            args.study,
            [float(f) for f in args.fractions.split(",")],
            [int(n) for n in args.sizes.split(",")],
            args.save,
            args.variants,
        )
    elif args.action == "int8":
        int8_rows(case, [float(f) for f in args.fractions.split(",")])
    else:
        memory_row(case, int(args.sizes.split(",")[-1]), float(args.fractions.split(",")[0]))


if __name__ == "__main__":
    main()
