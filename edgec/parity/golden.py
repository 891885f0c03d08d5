"""The golden sample an artifact carries: texts from the gate's data with the fp32 reference outputs on them and the
artifact's own outputs at build time, so `edgec parity ARTIFACT` can check it with no source model and no network.

Texts are stored, not token ids: the check runs them through the artifact's own tokenizer, so damage to the tokenizer
shows as well (as changed token counts, and as changed outputs). Two rows judge the artifact:
- against the fp32 reference, with the thresholds the build was gated by;
- against its own build-time outputs, with REPRODUCTION: damage moves outputs far more than another CPU or ONNX
  Runtime build does, which this still allows.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgec.data import Dataset, Example, read_dataset, sample_indices
from edgec.errors import InputError
from edgec.parity.evalset import EvalSet, eval_texts
from edgec.parity.ledger import ParityRow, parity_row
from edgec.recipe import ParityThresholds
from edgec.running.inference import Batch, Forward, Outputs, collect_outputs, encode_batches
from edgec.source import TOKEN_LEVEL_TASKS

TEXTS_FILE = "golden/texts.jsonl"
OUTPUTS_FILE = "golden/outputs.npz"
SIZE = 64
REPRODUCTION = ParityThresholds(min_cosine=0.999, min_agreement=0.95)
"""Closeness to the artifact's own build-time outputs: int8 kernels of another instruction set (AVX2 u8s8 against
VNNI, ARM s8s8) move embeddings by ~1e-4 in cosine and may flip a borderline class; damage moves far more."""


@dataclass(frozen=True)
class GoldenSample:
    """Golden texts (as the model runs them) and the outputs stored for them, in text order."""

    texts: Dataset
    reference: Outputs
    """The uncompressed fp32 model's outputs."""
    artifact: Outputs
    """The artifact's own outputs when it was built."""
    token_counts: np.ndarray


def _rows(outputs: Outputs, rows: list[int]) -> Outputs:
    """Some rows of a run's outputs; token-level outputs trimmed to the longest of those rows."""
    mask = outputs.mask[rows]
    longest = int(mask.sum(axis=1).max())
    trim = lambda v: v[rows][:, :longest] if v.ndim >= 3 else v[rows]  # noqa: E731
    return Outputs({name: trim(values) for name, values in outputs.values.items()}, mask[:, :longest])


def token_counts(batches: list[Batch], count: int) -> np.ndarray:
    counts = np.zeros(count, dtype=np.int64)
    for batch in batches:
        counts[batch.indices] = batch.feeds["attention_mask"].sum(axis=1)
    return counts


def take(evaluation: EvalSet, task: str, seed: int, size: int = SIZE) -> tuple[Dataset, Outputs]:
    """The golden texts drawn from the gate's data, and the reference outputs already computed for them."""
    texts = eval_texts(task, evaluation.dataset)
    rows = sample_indices(len(texts), min(size, len(texts)), seed)
    picked = texts.subset(rows)
    return Dataset(tuple(Example(e.text, e.text_pair) for e in picked.examples), "golden sample"), _rows(
        evaluation.reference, rows
    )


def run(
    texts: Dataset, forward: Forward, tokenizer, max_length: int, task: str
) -> tuple[Outputs, np.ndarray, list[Batch]]:
    """The outputs of `forward` on the golden texts, their token counts, and the batches."""
    batches = encode_batches(tokenizer, texts, max_length=max_length)
    return (
        collect_outputs(forward, batches, token_level=task in TOKEN_LEVEL_TASKS),
        token_counts(batches, len(texts)),
        batches,
    )


def runtime_name(model: Path, simulated: bool) -> str:
    """Which runtime produced an artifact's outputs: its own (onnx, ort, engine) or a simulation standing in for it."""
    return "simulated" if simulated else model.suffix.lstrip(".")


def write(
    folder: Path, texts: Dataset, reference: Outputs, artifact: Outputs, counts: np.ndarray, runtime: str
) -> dict:
    """golden/texts.jsonl and golden/outputs.npz (byte-for-byte reproducible); returns the manifest's entry."""
    (folder / "golden").mkdir()
    lines = [
        json.dumps({"text": e.text} | ({"text_pair": e.text_pair} if e.text_pair is not None else {}))
        for e in texts.examples
    ]
    (folder / TEXTS_FILE).write_text("\n".join(lines) + "\n")
    arrays = {"token_counts": counts, "mask": reference.mask}
    arrays |= {f"reference.{k}": v for k, v in reference.values.items()} | {
        f"artifact.{k}": v for k, v in artifact.values.items()
    }
    _save_npz(folder / OUTPUTS_FILE, arrays)
    return {
        "texts": TEXTS_FILE,
        "outputs": OUTPUTS_FILE,
        "examples": len(texts),
        "reproduction": asdict(REPRODUCTION),
        "artifact_runtime": runtime,
    }


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez stamps the time into its zip; this writes the same format with a fixed one."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(arrays):
            buffer = io.BytesIO()
            np.save(buffer, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buffer.getvalue())


def read(folder: Path) -> GoldenSample:
    """The golden sample of an artifact folder; a missing or unreadable one is an InputError."""
    if not (folder / TEXTS_FILE).is_file() or not (folder / OUTPUTS_FILE).is_file():
        raise InputError(
            f"{folder} carries no golden sample ({TEXTS_FILE}); rebuild it with this edgec, or pass --data FILE"
        )
    texts = read_dataset(folder / TEXTS_FILE)
    try:
        with np.load(folder / OUTPUTS_FILE, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InputError(f"{folder / OUTPUTS_FILE} is unreadable ({exc}); rebuild the artifact") from None
    values = lambda prefix: {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}  # noqa: E731
    if "mask" not in arrays or "token_counts" not in arrays or not values("reference."):
        raise InputError(f"{folder / OUTPUTS_FILE} lacks the stored outputs; rebuild the artifact")
    mask = arrays["mask"]
    return GoldenSample(
        texts, Outputs(values("reference."), mask), Outputs(values("artifact."), mask), arrays["token_counts"]
    )


def check(
    sample: GoldenSample,
    forward: Forward,
    tokenizer,
    max_length: int,
    task: str,
    model: str,
    thresholds: ParityThresholds,
    simulated: bool = False,
    reproduce: bool = True,
    hidden_pruned: bool = False,
) -> list[ParityRow]:
    """Run the artifact on its golden texts: the row against the fp32 reference and, with `reproduce` (the same
    runtime as at build time: not an engine against its CPU simulation), the row against its own build.

    `hidden_pruned` (the build's Recipe.prunes_hidden): the artifact's embedding may be narrower than the stored
    reference's, and is then compared with it width-free; against its own build the widths match."""
    outputs, counts, batches = run(sample.texts, forward, tokenizer, max_length, task)
    names = ("golden vs fp32 reference", "golden vs the build's own outputs")
    if counts.shape != sample.token_counts.shape or (counts != sample.token_counts).any():
        changed = (
            int((counts != sample.token_counts).sum()) if counts.shape == sample.token_counts.shape else len(counts)
        )
        failure = (f"the tokenizer splits {changed} of {len(counts)} golden texts differently than at build time",)
        return [ParityRow(name, model, {}, failure) for name in names[: 1 + reproduce]]
    rows = []
    for name, stored, limits in ((names[0], sample.reference, thresholds), (names[1], sample.artifact, REPRODUCTION))[
        : 1 + reproduce
    ]:
        evaluation = EvalSet(sample.texts, batches, stored, {}, None, hidden_pruned)
        rows.append(parity_row(name, model, task, evaluation, outputs, limits, simulated=simulated))
    return rows
