"""edgec finetune on SST-2 (train -> dev) under a wall-clock budget: the "train large" half's first figure.

Fine-tunes a model for sequence classification through `edgec finetune` (AdamW, warmup + linear decay,
bf16 autocast, the best dev checkpoint kept) and writes its dev accuracy curve into RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models  # noqa: E402
from run import machine, write_section  # noqa: E402

from edgec.artifact import package_versions  # noqa: E402
from edgec.data import Columns, read_dataset  # noqa: E402
from edgec.finetune import finetune  # noqa: E402
from edgec.recipe import TrainConfig  # noqa: E402

SST2 = HERE.parent.parent / "shared" / "data" / "sst2"


def markdown(name: str, record: dict, command: str) -> str:
    curve = ", ".join(f"{step}: {score:.2f}" for step, score in record["history"])
    config = record["config"]
    return "\n".join([
        f"## edgec finetune: {name} on SST-2 ({record['metric']} on dev)", "",
        f"Machine: {machine()}. Versions: " + ", ".join(f"{k} {v}" for k, v in package_versions().items()) + ".",
        f"Command: `{command}`. Budget {config['minutes']} min, batch {config['batch_size']}, lr {config['learning_rate']}, "
        f"{config['schedule']} decay, warmup {config['warmup']}, {config['precision']} autocast, max_length {config['max_length']}.", "",
        "| model | train examples | steps | stopped by | dev accuracy at start | best dev accuracy | best at step | seconds |",
        "|---|---|---|---|---|---|---|---|",
        f"| {name} | {record['train_examples']} | {record['steps']} | {record['stopped']} | {record['start_score']:.2f} | "
        f"{record['best_score']:.2f} | {record['best_step']} | {record['seconds']:.0f} |", "",
        f"Dev accuracy by step: {curve}.", "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--eval-every", type=int, default=150)
    parser.add_argument("--out", type=Path, help="Keep the fine-tuned folder here (default: a temporary folder).")
    args = parser.parse_args()
    command = ("python benchmarks/finetune_sst2.py " + " ".join(sys.argv[1:])).strip()
    columns = Columns(text="sentence", label="label")
    train, dev = read_dataset(SST2 / "train.tsv", columns), read_dataset(SST2 / "dev.tsv", columns)
    config = TrainConfig(steps=100_000, minutes=args.minutes, batch_size=32, learning_rate=args.lr, warmup=0.06,
                         eval_every=args.eval_every, patience=100, max_length=64)
    with tempfile.TemporaryDirectory(prefix="edgec-ft-") as tmp:
        out = args.out or Path(tmp) / "model"
        record = finetune(getattr(models, args.model)(), task="sequence-classification", train_data=train, eval_data=dev,
                          config=config, out=out, force=True)
    table = markdown(args.model, record, command)
    write_section(HERE / "RESULTS.md", f"finetune-sst2-{args.model}", table, "benchmarks/finetune_sst2.py")
    print(table)


if __name__ == "__main__":
    main()
