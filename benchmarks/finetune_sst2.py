"""`edgec finetune` on SST-2 with its default settings under a wall-clock budget; dev accuracy of what it kept.

    python benchmarks/finetune_sst2.py --model minilm --minutes 20     # runs, writes results-finetune-sst2-minilm.json
    python benchmarks/finetune_sst2.py --model minilm --render          # RESULTS.md section from the committed JSON
    python benchmarks/finetune_sst2.py --model minilm --minutes 20 --isa avx2   # as on an AVX2-only CPU (see ISA_CAPS)

The command is the CLI itself (`python -m edgec finetune ... --minutes M`, every other option at its default,
`--precision auto` among them). The best checkpoint is chosen on a validation split held out of SST-2 *train*
(`--validation` sentences, drawn deterministically), never on dev: dev accuracy is measured afterwards on the
saved model, so nothing selected on the figure reported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models  # noqa: E402
from run import machine, write_section  # noqa: E402

from edgec.artifacts.artifact import package_versions  # noqa: E402
from edgec.data import Columns, Dataset, read_dataset  # noqa: E402
from edgec.parity.evalset import reference_outputs  # noqa: E402
from edgec.source import load_source  # noqa: E402

SST2 = HERE.parent.parent / "shared" / "data" / "sst2"

# Running a bigger CPU as an AVX2-only one: every kernel library torch trains with is capped at AVX2 (ATen's own
# kernels, oneDNN's matmuls and MKL's), so bf16 is no longer native and `--precision auto` must see that and
# take fp32, as it would on a Zen 3 EPYC. The microarchitecture stays this machine's: only the instruction set is.
ISA_CAPS = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}


def write_split(train: Dataset, validation_size: int, folder: Path) -> tuple[Path, Path]:
    """SST-2 train minus a deterministic validation sample, and that sample, as .jsonl files."""
    held = set(np.random.default_rng(0).choice(len(train), size=validation_size, replace=False).tolist())
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "train.jsonl", folder / "validation.jsonl"
    with open(paths[0], "w") as rest, open(paths[1], "w") as validation:
        for i, example in enumerate(train.examples):
            line = json.dumps({"text": example.text, "label": example.label}) + "\n"
            (validation if i in held else rest).write(line)
    return paths


def dev_accuracy(model_dir: Path, dev: Dataset) -> float:
    source = load_source(model_dir)
    return reference_outputs(source, dev, source.max_length).reference_metric["accuracy"]


def run(args: argparse.Namespace) -> dict:
    columns = Columns(text="sentence", label="label")
    train, dev = read_dataset(SST2 / "train.tsv", columns), read_dataset(SST2 / "dev.tsv", columns)
    train_file, validation_file = write_split(train, args.validation, models.WORK / "sst2-split")
    with tempfile.TemporaryDirectory(prefix="edgec-ft-") as tmp:
        out = args.out or Path(tmp) / "model"
        cli = [
            sys.executable,
            "-m",
            "edgec",
            "finetune",
            str(getattr(models, args.model)()),
            "--data",
            str(train_file),
            "--eval",
            str(validation_file),
            "--minutes",
            f"{args.minutes:g}",
            "--out",
            str(out),
            "--force",
        ]
        subprocess.run(cli, check=True, env={**os.environ, **ISA_CAPS.get(args.isa, {})})
        record = json.loads((out / "edgec_finetune.json").read_text())
        accuracy = dev_accuracy(out, dev)
    capped = f" --isa {args.isa}" if args.isa else ""
    return {
        "model": args.model,
        "isa": args.isa,
        "machine": machine() + (f"; kernels capped at {args.isa} ({ISA_CAPS[args.isa]})" if args.isa else ""),
        "versions": package_versions(),
        "command": f"python benchmarks/finetune_sst2.py --model {args.model} --minutes {args.minutes:g}{capped}",
        "cli": "edgec finetune MODEL --data train.jsonl --eval validation.jsonl --minutes " + f"{args.minutes:g}",
        "validation_examples": args.validation,
        "dev_examples": len(dev),
        "dev_accuracy": accuracy,
        "record": record,
    }


def markdown(result: dict) -> str:
    record, config = result["record"], result["record"]["config"]
    curve = ", ".join(f"{step}: {score:.2f}" for step, score in record["history"])
    return "\n".join(
        [
            f"## edgec finetune: {result['model']} on SST-2, default settings, {config['minutes']:g} minutes"
            + (f", as on an {result['isa'].upper()}-only CPU" if result.get("isa") else ""),
            "",
            f"Machine: {result['machine']}. Versions: "
            + ", ".join(f"{k} {v}" for k, v in result["versions"].items())
            + ".",
            f"Command: `{result['command']}`, which runs `{result['cli']}` (every other option at its default: batch "
            f"{config['batch_size']}, lr {config['learning_rate']}, {config['schedule']} decay, warmup {config['warmup']}, "
            f"max_length {config['max_length']}, eval every {config['eval_every']} steps, patience {config['patience']}). "
            f"Precision: {record['precision_reason']}.",
            f"The checkpoint is chosen on {result['validation_examples']} sentences held out of SST-2 train; dev "
            f"({result['dev_examples']} sentences) is scored once, afterwards.",
            "",
            "| model | train examples | steps | stopped by | seconds | best validation accuracy (step) | dev accuracy |",
            "|---|---|---|---|---|---|---|",
            f"| {result['model']} | {record['train_examples']} | {record['steps']} | {record['stopped']} | {record['seconds']:.0f} | "
            f"{record['best_score']:.2f} ({record['best_step']}) | **{result['dev_accuracy']:.2f}** |",
            "",
            f"Validation accuracy by step: {curve}.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument(
        "--validation", type=int, default=2000, help="SST-2 train sentences held out for checkpoint choice."
    )
    parser.add_argument("--out", type=Path, help="Keep the fine-tuned folder here (default: a temporary folder).")
    parser.add_argument("--isa", choices=sorted(ISA_CAPS), help="Train as on a CPU with only this instruction set.")
    parser.add_argument("--render", action="store_true", help="Only rewrite RESULTS.md from the committed JSON.")
    args = parser.parse_args()
    name = f"finetune-sst2-{args.model}" + (f"-{args.isa}" if args.isa else "")
    results = HERE / f"results-{name}.json"
    if not args.render:
        results.write_text(json.dumps(run(args), indent=2) + "\n")
    table = markdown(json.loads(results.read_text()))
    write_section(HERE / "RESULTS.md", name, table, "benchmarks/finetune_sst2.py")
    print(table)


if __name__ == "__main__":
    main()
