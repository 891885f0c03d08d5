"""Calibration and evaluation data: readers for .txt, .jsonl, .csv/.tsv, validation, sampling and batching.

Every value is checked where it is read: a bad row is an InputError naming the file, the line and the fix. Files
are read as a stream, so a sample of a file larger than memory costs memory for the sample only; the sample is
the same whether it is drawn while reading or from the whole file afterwards (`sample_indices`).
"""

from __future__ import annotations

import csv
import hashlib
import heapq
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgec.errors import ConfigError, InputError

FORMATS = (".txt", ".jsonl", ".csv", ".tsv")
_OPTIONAL_FIELDS = (("text_pair", "a second text (text_pair)"), ("label", "a label"), ("score", "a score"))


@dataclass(frozen=True)
class Example:
    """One input: a text, optionally a second text, and optionally a class label or a similarity score."""

    text: str
    text_pair: str | None = None
    label: int | str | None = None
    score: float | None = None
    line: int | None = None
    """Line (row) of the file it was read from, for error messages."""


@dataclass(frozen=True, kw_only=True)
class Columns:
    """Column names for .csv/.tsv files."""

    text: str = "text"
    text_pair: str | None = None
    label: str | None = None
    score: str | None = None


@dataclass(frozen=True)
class Dataset:
    """Examples read from one file, in file order. Every example has a text pair, label or score, or none does."""

    examples: tuple[Example, ...]
    source: str

    def __post_init__(self) -> None:
        for name, what in _OPTIONAL_FIELDS:
            having = [e for e in self.examples if getattr(e, name) is not None]
            if having and len(having) < len(self.examples):
                lacking = next(e for e in self.examples if getattr(e, name) is None)
                raise InputError(
                    f"{self.where(lacking)}: no {name} here, but {self.where(having[0])} has {what}; "
                    f"give every row {what} or none"
                )

    def __len__(self) -> int:
        return len(self.examples)

    def where(self, example: Example) -> str:
        """`file:line` of an example, for messages."""
        return f"{self.source}:{example.line}" if example.line is not None else self.source

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.examples]

    @property
    def has_pairs(self) -> bool:
        return bool(self.examples) and self.examples[0].text_pair is not None

    @property
    def has_scores(self) -> bool:
        return bool(self.examples) and self.examples[0].score is not None

    @property
    def has_labels(self) -> bool:
        return bool(self.examples) and self.examples[0].label is not None

    def sample(self, n: int, seed: int = 0) -> Dataset:
        """At most n examples, drawn deterministically (as read_dataset(sample=n) draws them), kept in file order."""
        if n >= len(self.examples):
            return self
        return self.subset(sample_indices(len(self.examples), n, seed))

    def subset(self, indices: Iterable[int]) -> Dataset:
        return Dataset(tuple(self.examples[i] for i in indices), self.source)

    def single_texts(self) -> Dataset:
        """Every text (and text pair) as its own example: calibration needs texts, not pairs."""
        texts = [(t, e.line) for e in self.examples for t in (e.text, e.text_pair) if t is not None]
        return Dataset(tuple(Example(t, line=line) for t, line in texts), self.source)


def _priority(seed: int, index: int) -> int:
    """A fixed pseudo-random rank per row: a sample is the n rows of lowest rank, however the rows arrive."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=8).digest(), "little")


def sample_indices(count: int, n: int, seed: int) -> list[int]:
    """Indices (ascending) of the n rows of lowest rank among `count`: the sample `read_dataset(sample=n)` keeps."""
    return sorted(heapq.nsmallest(n, range(count), key=lambda i: _priority(seed, i)))


def _reservoir(rows: Iterator[Example], n: int | None, seed: int) -> list[Example]:
    """All rows, or the n of lowest rank, in file order; memory for n rows only."""
    if n is None:
        return list(rows)
    heap: list[tuple[int, int, Example]] = []  # (-rank, index, example): the root is the highest rank kept
    for index, row in enumerate(rows):
        item = (-_priority(seed, index), index, row)
        if len(heap) < n:
            heapq.heappush(heap, item)
        elif item > heap[0]:
            heapq.heapreplace(heap, item)
    return [row for _, _, row in sorted(heap, key=lambda entry: entry[1])]


def read_dataset(
    path: str | Path, columns: Columns = Columns(), *, sample: int | None = None, seed: int = 0
) -> Dataset:
    """Read a data file by its extension, or a deterministic sample of `sample` rows of it, in one streaming pass.

    Malformed, empty or inconsistent files raise InputError naming the line.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"data file {path} does not exist; pass the path of a {'/'.join(FORMATS)} file")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"data file {path} has an unknown extension {suffix!r}; use one of {', '.join(FORMATS)}")
    if sample is not None and sample < 1:
        raise ConfigError(f"a sample needs at least 1 example, got {sample}")
    reader = {".txt": _read_txt, ".jsonl": _read_jsonl}.get(suffix, _read_table)
    try:
        with open(path, encoding="utf-8", newline="") as stream:
            examples = _reservoir(reader(stream, path, columns), sample, seed)
    except UnicodeDecodeError:
        raise InputError(f"data file {path} is not UTF-8 text; re-encode it as UTF-8") from None
    except csv.Error as exc:
        raise InputError(
            f"{path}: not a readable {suffix[1:]} file ({exc}); fix the quoting or the delimiter"
        ) from None
    if not examples:
        raise InputError(f"data file {path} holds no examples; add at least one non-empty line")
    return Dataset(tuple(examples), str(path))


class _Consistency:
    """Tracks, while streaming, the first row with and the first row without each optional field."""

    def __init__(self, path: Path):
        self.path, self.first_with, self.first_without = path, {}, {}

    def see(self, example: Example) -> Example:
        for name, what in _OPTIONAL_FIELDS:
            seen = self.first_with if getattr(example, name) is not None else self.first_without
            seen.setdefault(name, example.line)
            if name in self.first_with and name in self.first_without:
                lacking, having = self.first_without[name], self.first_with[name]
                raise InputError(
                    f"{self.path}:{lacking}: no {name} here, but line {having} has {what}; "
                    f"give every row {what} or none"
                )
        return example


def _read_txt(stream, path: Path, columns: Columns) -> Iterator[Example]:
    for number, line in enumerate(stream, start=1):
        if line.strip():
            yield Example(line.strip(), line=number)


def _read_jsonl(stream, path: Path, columns: Columns) -> Iterator[Example]:
    consistency = _Consistency(path)
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise InputError(
                f"{where}: not valid JSON ({getattr(exc, 'msg', 'nested too deeply')}); each line must be one JSON object"
            ) from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise InputError(f'{where}: expected an object with a string "text" field')
        unknown = set(row) - {"text", "text_pair", "label", "score"}
        if unknown:
            raise InputError(
                f"{where}: unknown field(s) {', '.join(sorted(unknown))}; use text, text_pair, label, score"
            )
        pair = row.get("text_pair")
        if pair is not None and not isinstance(pair, str):
            raise InputError(f'{where}: "text_pair" must be a string, got {type(pair).__name__}')
        yield consistency.see(_example(row["text"], pair, row.get("label"), row.get("score"), where, number))


def _read_table(stream, path: Path, columns: Columns) -> Iterator[Example]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.DictReader(stream, delimiter=delimiter)
    header = list(reader.fieldnames or [])
    wanted = [c for c in (columns.text, columns.text_pair, columns.label, columns.score) if c is not None]
    missing = [c for c in wanted if c not in header]
    if missing:
        raise InputError(
            f"{path}: column(s) {', '.join(missing)} not in the header ({', '.join(header) or 'empty'}); "
            "name them with --text-column / --text-pair-column / --label-column / --score-column"
        )
    consistency = _Consistency(path)
    for row in reader:
        get = lambda name: row.get(name) if name else None  # noqa: E731, B023
        # An empty cell is a missing value; the consistency check then says whether the column may have one.
        pair, label, score = (
            None if value in (None, "") else value
            for value in map(get, (columns.text_pair, columns.label, columns.score))
        )
        where = f"{path}:{reader.line_num}"
        yield consistency.see(_example(get(columns.text), pair, label, score, where, reader.line_num))


def _example(text, text_pair, label, score, where: str, line: int) -> Example:
    if text is None or not str(text).strip():
        raise InputError(f"{where}: empty text; remove the row or fill it in")
    return Example(
        str(text), None if text_pair is None else str(text_pair), _label(label, where), _score(score, where), line
    )


def _label(label, where: str) -> int | str | None:
    """A class id (an integer, or an integral float such as 1.0) or a class name; anything else is refused."""
    if label is None or isinstance(label, int) and not isinstance(label, bool):
        return label
    if isinstance(label, float) and math.isfinite(label) and label.is_integer():
        return int(label)
    if isinstance(label, str) and label.strip():
        text = label.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            return text  # a class name
        if math.isfinite(number) and number.is_integer():
            return int(number)
        if not math.isfinite(number):
            return text  # "nan" or "inf" can only be a name
    raise InputError(f"{where}: label {label!r} is neither a class id (an integer) nor a class name; fix the label")


def _score(score, where: str) -> float | None:
    if score is None:
        return None
    try:
        if isinstance(score, bool) or not isinstance(score, (int, float, str)):
            raise TypeError
        value = float(score)
    except (TypeError, ValueError):
        raise InputError(f"{where}: score {score!r} is not a number; scores are numbers such as 3.8") from None
    if not math.isfinite(value):
        raise InputError(f"{where}: score {score!r} is not a finite number; fix the score")
    return value


def read_sts_benchmark(path: str | Path) -> Dataset:
    """The official STS Benchmark layout: tab separated, no header, no quoting; score in column 5."""
    examples = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split("\t")
        if len(fields) < 7:
            raise InputError(f"{path}:{number}: expected at least 7 tab-separated fields (STS Benchmark layout)")
        examples.append(Example(fields[5], fields[6], score=_score(fields[4], f"{path}:{number}"), line=number))
    return Dataset(tuple(examples), str(path))


def columns_from_options(text: str | None, text_pair: str | None, label: str | None, score: str | None) -> Columns:
    """Columns from CLI options; the text column defaults to `text`."""
    if text is not None and not text.strip():
        raise ConfigError("--text-column must not be empty")
    return Columns(text=text or "text", text_pair=text_pair, label=label, score=score)


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[np.ndarray]:
    """Index batches of similar lengths (less padding), longest first; callers restore the order."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]
