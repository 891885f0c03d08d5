"""The prune-quality benchmark's cases: which model, which data, and how each split is used.

Every case has four roles of data, and nothing is chosen on the split that is reported:
- train: what fine-tuning trains on and pruning calibrates on (labelled train texts);
- validation: what fine-tuning's best checkpoint and early stop, and every pruning setting, are chosen on
  (SST-2: 2,000 sentences held out of train; CLINC150: its val split; STS-B: its dev split);
- report: what the tables show (SST-2 dev, CLINC150 test, STS-B test), scored once per finished model.
Split files are written once under benchmarks/work/prune_quality/ (gitignored) and reused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import models
import numpy as np

from edgec.data import Columns, Dataset, Example, read_dataset, read_sts_benchmark

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SPLITS = models.WORK / "prune_quality"
FINETUNED = models.WORK / "finetuned"
SST2_VALIDATION = 2000


@dataclass(frozen=True)
class Finetune:
    """`edgec finetune` settings of one case (plateau: `patience` evaluations without a better validation score)."""

    minutes: float
    steps: int
    lr: float
    eval_every: int
    patience: int = 4
    batch_size: int = 32
    max_length: int = 64

    def options(self) -> list[str]:
        return [
            "--minutes",
            f"{self.minutes:g}",
            "--steps",
            str(self.steps),
            "--lr",
            f"{self.lr:g}",
            "--eval-every",
            str(self.eval_every),
            "--patience",
            str(self.patience),
            "--batch-size",
            str(self.batch_size),
            "--max-length",
            str(self.max_length),
        ]


@dataclass(frozen=True)
class Case:
    name: str
    model: str
    """benchmarks/models.py function giving the pretrained folder."""
    task: str
    report_split: str
    finetune: Finetune | None
    """None: the pretrained model is pruned as it is (the embedding case)."""


CASES = {
    c.name: c
    for c in (
        Case("minilm-sst2", "minilm", "sequence-classification", "SST-2 dev", Finetune(30, 4000, 1e-4, 250)),
        Case("mpnet-sst2", "mpnet", "sequence-classification", "SST-2 dev", Finetune(60, 3000, 5e-5, 200)),
        Case("minilm-clinc150", "minilm", "sequence-classification", "CLINC150 test", Finetune(30, 5000, 1e-4, 250)),
        Case("mpnet-stsb", "mpnet", "feature-extraction", "STS-B test", None),
        Case("minilm-stsb", "minilm", "feature-extraction", "STS-B test", None),  # where least squares was seen to hurt
    )
}


def splits(case: Case) -> dict[str, Dataset]:
    """train, validation and report datasets of a case (labelled; STS-B as scored pairs)."""
    if case.name.endswith("sst2"):
        return _sst2()
    if case.name.endswith("clinc150"):
        return _clinc150()
    sts = DATA / "stsbenchmark"
    return {
        "train": read_sts_benchmark(sts / "sts-train.csv"),
        "validation": read_sts_benchmark(sts / "sts-dev.csv"),
        "report": read_sts_benchmark(sts / "sts-test.csv"),
    }


def split_files(case: Case) -> tuple[Path, Path]:
    """The train and validation .jsonl files fine-tuning reads (written on first use)."""
    splits(case)
    folder = SPLITS / case.name.split("-")[1]
    return folder / "train.jsonl", folder / "validation.jsonl"


def calibration(case: Case, data: dict[str, Dataset], count: int, seed: int = 0) -> Dataset:
    """`count` labelled train texts (STS-B: single train sentences, unlabelled), drawn deterministically."""
    train = data["train"].single_texts() if case.task == "feature-extraction" else data["train"]
    return train.sample(count, seed)


def _sst2() -> dict[str, Dataset]:
    """SST-2 train minus 2,000 sentences held out for validation (the draw finetune_sst2.py also makes), and dev."""
    folder = SPLITS / "sst2"
    if not (folder / "validation.jsonl").is_file():
        train = read_dataset(DATA / "sst2" / "train.tsv", Columns(text="sentence", label="label"))
        held = set(np.random.default_rng(0).choice(len(train), size=SST2_VALIDATION, replace=False).tolist())
        _write(
            folder,
            {
                "train": [e for i, e in enumerate(train.examples) if i not in held],
                "validation": [e for i, e in enumerate(train.examples) if i in held],
            },
        )
    found = {role: read_dataset(folder / f"{role}.jsonl") for role in ("train", "validation")}
    return {**found, "report": read_dataset(DATA / "sst2" / "dev.tsv", Columns(text="sentence", label="label"))}


def _clinc150() -> dict[str, Dataset]:
    """CLINC150's in-scope train, val and test splits (the oos_* splits are left out, as in the example)."""
    folder = SPLITS / "clinc150"
    if not (folder / "report.jsonl").is_file():
        raw = json.loads((DATA / "clinc150" / "data_full.json").read_text())
        rows = lambda split: [Example(" ".join(text.split()), label=intent) for text, intent in raw[split]]  # noqa: E731
        _write(folder, {"train": rows("train"), "validation": rows("val"), "report": rows("test")})
    return {role: read_dataset(folder / f"{role}.jsonl") for role in ("train", "validation", "report")}


def _write(folder: Path, roles: dict[str, list[Example]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for role, examples in roles.items():
        lines = [json.dumps({"text": e.text, "label": e.label}) for e in examples]
        partial = folder / f"{role}.jsonl.partial"
        partial.write_text("\n".join(lines) + "\n")
        partial.replace(folder / f"{role}.jsonl")
