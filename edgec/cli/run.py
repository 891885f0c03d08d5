"""edgec run ARTIFACT TEXT [TEXT ...]: embeddings or labels from the artifact alone."""

from __future__ import annotations

import json
from typing import Annotated

import numpy as np
import typer

from edgec.artifacts.artifact import load_artifact
from edgec.artifacts.artifact_ops import predict
from edgec.cli.common import command, stdout, table
from edgec.cli.options import ArtifactPath, AsJson
from edgec.errors import ConfigError


def register(app: typer.Typer) -> None:
    command(app, "run", run)


def run(
    artifact: ArtifactPath,
    texts: Annotated[list[str], typer.Argument(help="Texts to run.")],
    pair: Annotated[
        list[str] | None, typer.Option(help="Second text for each TEXT (pair classifiers), repeatable.")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Embed or classify texts with the compiled model (plain ONNX Runtime + tokenizer)."""
    if pair and len(pair) != len(texts):
        raise ConfigError(f"got {len(pair)} --pair texts for {len(texts)} texts; give one --pair per text or none")
    loaded = load_artifact(artifact)
    outputs = predict(loaded, list(texts), list(pair) if pair else None)
    task, labels = loaded.manifest.task, loaded.manifest.labels or {}
    if as_json:
        print(json.dumps({"task": task, "outputs": {k: v.tolist() for k, v in outputs.items()}}))
        return
    if task == "sequence-classification":
        probs = _softmax(outputs["logits"])
        rows = [
            [t, labels.get(str(int(p.argmax())), str(int(p.argmax()))), f"{p.max():.3f}"] for t, p in zip(texts, probs)
        ]
        stdout.print(table("predictions", ["text", "label", "probability"], rows))
    elif task == "feature-extraction":
        vectors = outputs["sentence_embedding"]
        rows = [
            [t, str(v.shape[0]), f"{np.linalg.norm(v):.4f}", " ".join(f"{x:+.3f}" for x in v[:4]) + " ..."]
            for t, v in zip(texts, vectors)
        ]
        stdout.print(table("embeddings", ["text", "dim", "norm", "first values"], rows))
        if len(texts) > 1:
            unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
            stdout.print(f"cosine(text 1, text 2) = {float(unit[0] @ unit[1]):.4f}")
    else:
        print(json.dumps({k: v.tolist() for k, v in outputs.items()}))


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)
