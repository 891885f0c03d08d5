"""README.md for an artifact in the Hugging Face model-card format: an artifact folder pushed to a model hub reads
well as it is. Metadata (base model, pipeline tag, library, tags) in the YAML header; the body says what edgec did,
how the artifact held parity, its size and latency against the source, and how to load it in five libraries."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from edgec.artifacts.report import format_ledger, markdown_table, pruning_rows
from edgec.artifacts.report_sections import bench_note, gate_rows, speed_size_table

if TYPE_CHECKING:
    from edgec.artifacts.manifest import Manifest

CARD_FILE = "README.md"
_PIPELINE_TAGS = {
    "feature-extraction": "sentence-similarity",
    "sequence-classification": "text-classification",
    "token-classification": "token-classification",
    "question-answering": "question-answering",
}
_OPTIMUM_CLASSES = {
    "feature-extraction": "ORTModelForFeatureExtraction",
    "sequence-classification": "ORTModelForSequenceClassification",
    "token-classification": "ORTModelForTokenClassification",
    "question-answering": "ORTModelForQuestionAnswering",
}
# A model from the local Hugging Face cache sits in models--ORG--NAME/snapshots/REV: the folder names the repository.
_HF_CACHE_FOLDER = re.compile(r"models--([^/]+?)--([^/]+)/snapshots/")


def write_model_card(folder: Path, manifest: Manifest) -> Path:
    """Write README.md (front matter + body) into the artifact folder."""
    from huggingface_hub import ModelCardData

    task = manifest.task
    loads_in_sentence_transformers = task == "feature-extraction" and manifest.target.backend == "ort"
    data = ModelCardData(
        base_model=base_model_id(manifest.source.path),
        pipeline_tag=_PIPELINE_TAGS[task],
        library_name="sentence-transformers" if loads_in_sentence_transformers else "transformers",
        tags=tags(manifest),
    )
    path = folder / CARD_FILE
    path.write_text(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body(manifest)) + "\n")
    return path


def base_model_id(source_path: str) -> str | None:
    """The source's repository id where it is known (a model in the local HF cache); None for a plain folder."""
    found = _HF_CACHE_FOLDER.search(Path(source_path).as_posix() + "/")
    return f"{found.group(1)}/{found.group(2)}" if found else None


def tags(manifest: Manifest) -> list[str]:
    """edgec, the format, the precision, the target, the source architecture, and pruned where it was."""
    backend = manifest.target.backend
    found = [
        "edgec",
        "onnx" if backend != "mobile" else "ort",
        manifest.precision.value,
        manifest.target.name,
        manifest.source.model_type,
    ]
    if manifest.task == "feature-extraction" and backend == "ort":
        found.append("sentence-transformers")
    if manifest.stages.prune:
        found.append("pruned")
    return list(dict.fromkeys(found))


def body(manifest: Manifest) -> list[str]:
    """The card's Markdown: what was done, parity, size and latency, how to load it. Nothing in it depends on where
    or when the build ran (the folder is a temporary one then; stage times differ run to run), so the same inputs give
    the same card."""
    parity, source, target = manifest.parity, manifest.source, manifest.target
    verdict = "passed" if parity.passed else "FAILED"
    origin = base_model_id(source.path) or source.path
    title = f"{origin.rstrip('/').rsplit('/', 1)[-1]}: edgec {target.name} {manifest.precision}"
    intro = (
        f"{source.model_type} ({manifest.task}) compiled by edgec for **{target.name}** "
        f"({target.description}) in **{manifest.precision}**, from `{origin}`. Every stage was "
        f"checked against the uncompressed fp32 model on {parity.eval_examples} examples of "
        f"`{Path(parity.eval_data).name}`; the final artifact {verdict} its parity gate."
    )
    gates = markdown_table(["gate", "final artifact", "threshold", "verdict"], gate_rows(manifest))
    header, rows = format_ledger(parity.ledger, parity.reference_metric)
    timed = header.index("stage time")  # the reports keep the stage times
    ledger = markdown_table(header[:timed] + header[timed + 1 :], [row[:timed] + row[timed + 1 :] for row in rows])
    return [
        f"# {title}",
        "",
        intro,
        "",
        "## What edgec did",
        "",
        *recipe_lines(manifest),
        "",
        "## Parity",
        "",
        gates,
        "",
        ledger,
        "",
        "## Size and latency",
        "",
        markdown_table(*speed_size_table(manifest)),
        "",
        bench_note(manifest),
        "",
        *usage_lines(manifest),
    ]


def recipe_lines(manifest: Manifest) -> list[str]:
    """The recipe as bullets: front-end stages, export, fusions, quantization, what pruning left."""
    recipe, notes = manifest.recipe, manifest.stages
    lines = []
    if notes.prune and recipe.prune:
        prune = recipe.prune
        lines.append(
            f"- Pruned {prune.fraction:.0%} of the encoder's compute ({', '.join(prune.units)}), "
            "post-training (Fisher importance, least-squares rescaling):"
        )
        lines += [f"  - {label}: {value}" for label, value in pruning_rows(notes.prune)]
    if notes.distill:
        lines.append(f"- Distilled from the unpruned model: {notes.distill.steps} steps")
    inputs = ", ".join(i["name"] for i in manifest.io["inputs"])
    lines.append(
        f"- Exported to ONNX (opset {recipe.opset}), inputs {inputs}; truncation at {recipe.max_length} tokens"
    )
    fused = notes.optimize.fused_ops if notes.optimize else {}
    if fused:
        lines.append("- ONNX Runtime fusions: " + ", ".join(f"{op} x{n}" for op, n in fused.items()))
    if notes.quantize:
        counts = notes.int8_matmuls()
        share = f" ({counts[0]} of {counts[1]} weight MatMuls in int8)" if counts else ""
        lines.append(f"- Quantized: {notes.quantize.method}{share}")
    if notes.fallback and notes.fallback.kept_in_float:
        lines.append(f"- Kept in float after int8 broke parity: {', '.join(notes.fallback.kept_in_float)}")
    if manifest.pooling:
        pooling = manifest.pooling
        normalized = ", then L2-normalized" if pooling["normalize"] else ""
        lines.append(f"- Pooling in the graph (output `sentence_embedding`): {pooling['mode']}{normalized}")
    return lines


_EDGEC = """edgec:

```bash
edgec run path/to/artifact "a first text" "a second text"
```
"""
_ONNXRUNTIME = """ONNX Runtime and the tokenizer alone:

```python
import onnxruntime as ort
from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("path/to/artifact")
session = ort.InferenceSession("path/to/artifact/{model_file}")
feeds = tokenizer(["a first text"], padding=True, truncation=True, max_length={max_length},
                  return_tensors="np")
names = {outputs!r}
outputs = dict(zip(names, session.run(names, {{k: feeds[k] for k in {inputs!r}}})))
```
"""
_SENTENCE_TRANSFORMERS = """sentence-transformers (its ONNX backend runs this `model.onnx`, then the Pooling/Normalize
modules configured beside it: the same vectors as `sentence_embedding`):

```python
from sentence_transformers import SentenceTransformer

model = SentenceTransformer("path/to/artifact", backend="onnx")
embeddings = model.encode(["a first text", "a second text"])
```
"""
_OPTIMUM = """Optimum:

```python
from optimum.onnxruntime import {cls}
from transformers import AutoTokenizer

ort_model = {cls}.from_pretrained("path/to/artifact")
result = ort_model(**AutoTokenizer.from_pretrained("path/to/artifact")(["a first text"], return_tensors="pt"))
```
"""
_PIPELINE = """A transformers pipeline, on that Optimum model:

```python
from transformers import pipeline

classifier = pipeline("{task}", model=ort_model, tokenizer="path/to/artifact")
print(classifier({example}))
```
"""


def usage_lines(manifest: Manifest) -> list[str]:
    """How to load the artifact: edgec, onnxruntime and, for ONNX Runtime targets, sentence-transformers, Optimum and
    a transformers pipeline."""
    task = manifest.task
    snippets = [
        _EDGEC,
        _ONNXRUNTIME.format(
            model_file=manifest.model_file,
            max_length=manifest.recipe.max_length,
            outputs=[o["name"] for o in manifest.io["outputs"]],
            inputs=[i["name"] for i in manifest.io["inputs"]],
        ),
    ]
    if manifest.target.backend == "ort":
        snippets += [_SENTENCE_TRANSFORMERS] if task == "feature-extraction" else []
        snippets.append(_OPTIMUM.format(cls=_OPTIMUM_CLASSES[task]))
        example = 'question="what?", context="a first text"' if task == "question-answering" else '"a first text"'
        if task != "feature-extraction":
            snippets.append(_PIPELINE.format(task=_PIPELINE_TAGS[task], example=example))
    where = "Replace `path/to/artifact` with this folder (or its repository id once pushed to a hub)."
    return ["## Use it", "", where, "", *"\n".join(snippets).splitlines()]
