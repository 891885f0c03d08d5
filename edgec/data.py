"""Calibration and evaluation data: readers for .txt, .jsonl, .csv/.tsv, sampling and batching."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgec.errors import ConfigError, InputError

FORMATS = (".txt", ".jsonl", ".csv", ".tsv")


@dataclass(frozen=True)
class Example:
    """One input: a text, optionally a second text, and optionally a class label or a similarity score."""

    text: str
    text_pair: str | None = None
    label: int | str | None = None
    score: float | None = None


@dataclass(frozen=True, kw_only=True)
class Columns:
    """Column names for .csv/.tsv files."""

    text: str = "text"
    text_pair: str | None = None
    label: str | None = None
    score: str | None = None


@dataclass(frozen=True)
class Dataset:
    """Examples read from one file, in file order."""

    examples: tuple[Example, ...]
    source: str

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.examples]

    @property
    def has_pairs(self) -> bool:
        return all(e.text_pair is not None for e in self.examples)

    @property
    def has_scores(self) -> bool:
        return all(e.score is not None for e in self.examples)

    @property
    def has_labels(self) -> bool:
        return all(e.label is not None for e in self.examples)

    def sample(self, n: int, seed: int = 0) -> Dataset:
        """At most n examples, drawn deterministically, kept in file order."""
        if n >= len(self.examples):
            return self
        picked = np.sort(np.random.default_rng(seed).choice(len(self.examples), size=n, replace=False))
        return Dataset(tuple(self.examples[i] for i in picked), self.source)

    def single_texts(self) -> Dataset:
        """Every text (and text pair) as its own example: calibration needs texts, not pairs."""
        texts = [t for e in self.examples for t in (e.text, e.text_pair) if t is not None]
        return Dataset(tuple(Example(t) for t in texts), self.source)


def read_dataset(path: str | Path, columns: Columns = Columns()) -> Dataset:
    """Read a data file by its extension; malformed or empty files raise InputError naming the line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"data file {path} does not exist; pass the path of a {'/'.join(FORMATS)} file")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"data file {path} has an unknown extension {suffix!r}; use one of {', '.join(FORMATS)}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"data file {path} is not UTF-8 text; re-encode it as UTF-8") from None
    reader = {".txt": _read_txt, ".jsonl": _read_jsonl}.get(suffix, _read_table)
    examples = reader(text, path, columns)
    if not examples:
        raise InputError(f"data file {path} holds no examples; add at least one non-empty line")
    return Dataset(tuple(examples), str(path))


def _read_txt(text: str, path: Path, columns: Columns) -> list[Example]:
    return [Example(line.strip()) for line in text.splitlines() if line.strip()]


def _read_jsonl(text: str, path: Path, columns: Columns) -> list[Example]:
    examples = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{number}: not valid JSON ({exc.msg}); each line must be one JSON object") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise InputError(f'{path}:{number}: expected an object with a string "text" field')
        unknown = set(row) - {"text", "text_pair", "label", "score"}
        if unknown:
            raise InputError(f"{path}:{number}: unknown field(s) {', '.join(sorted(unknown))}; use text, text_pair, label, score")
        examples.append(_example(row.get("text"), row.get("text_pair"), row.get("label"), row.get("score"), f"{path}:{number}"))
    return examples


def _read_table(text: str, path: Path, columns: Columns) -> list[Example]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    rows = list(csv.DictReader(text.splitlines(), delimiter=delimiter))
    header = list(rows[0].keys()) if rows else []
    wanted = [c for c in (columns.text, columns.text_pair, columns.label, columns.score) if c is not None]
    missing = [c for c in wanted if c not in header]
    if missing:
        raise InputError(
            f"{path}: column(s) {', '.join(missing)} not in the header ({', '.join(header) or 'empty'}); "
            "name them with --text-column / --text-pair-column / --label-column / --score-column"
        )
    get = lambda row, name: row[name] if name else None  # noqa: E731
    return [
        _example(get(r, columns.text), get(r, columns.text_pair), get(r, columns.label), get(r, columns.score), f"{path}:{i}")
        for i, r in enumerate(rows, start=2)
    ]


def _example(text, text_pair, label, score, where: str) -> Example:
    if text is None or not str(text).strip():
        raise InputError(f"{where}: empty text; remove the row or fill it in")
    if score is not None:
        try:
            score = float(score)
        except ValueError:
            raise InputError(f"{where}: score {score!r} is not a number") from None
    if isinstance(label, str) and label.strip().lstrip("-").isdigit():
        label = int(label)
    return Example(str(text), None if text_pair is None else str(text_pair), label, score)


def read_sts_benchmark(path: str | Path) -> Dataset:
    """The official STS Benchmark layout: tab separated, no header, no quoting; score in column 5."""
    examples = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split("\t")
        if len(fields) < 7:
            raise InputError(f"{path}:{number}: expected at least 7 tab-separated fields (STS Benchmark layout)")
        examples.append(Example(fields[5], fields[6], score=float(fields[4])))
    return Dataset(tuple(examples), str(path))


def columns_from_options(
    text: str | None, text_pair: str | None, label: str | None, score: str | None
) -> Columns:
    """Columns from CLI options; the text column defaults to `text`."""
    if text is not None and not text.strip():
        raise ConfigError("--text-column must not be empty")
    return Columns(text=text or "text", text_pair=text_pair, label=label, score=score)


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
    """Index batches of similar lengths (less padding), longest first; callers restore the order."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]
