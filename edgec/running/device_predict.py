"""Embed or classify texts with an edgec artifact, using only onnxruntime, tokenizers and numpy.

Every ONNX Runtime artifact ships this file as predict.py (with requirements.txt pinning those three packages), so
a device runs its model without torch, transformers or edgec:

    pip install -r requirements.txt
    python predict.py "first text" "second text"        # a table
    python predict.py --json < texts.txt                 # one text per line; TEXT<tab>PAIR for pair classifiers

It reads everything else from the artifact's manifest (edgec.json): the model file, the task, the labels, the
truncation length, the ONNX Runtime session settings the artifact was verified with, and fixed input shapes
where the graph has them (accelerator-shaped mobile graphs: texts are padded to the sequence length and run in
batches of the fixed batch size). `edgec run` calls the same code. Keep this file standalone: standard library,
numpy, onnxruntime and tokenizers only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

_BATCH = 32  # texts per run where the graph takes any batch size
# The outputs each task answers with (edgec.source.OUTPUT_NAMES); an embedding artifact's graph also returns the token
# states (last_hidden_state) for sentence-transformers and Optimum, which this runner leaves out.
_OUTPUTS = {
    "feature-extraction": ("sentence_embedding",),
    "sequence-classification": ("logits",),
    "token-classification": ("logits",),
    "question-answering": ("start_logits", "end_logits"),
}
_LEVELS = {
    "disabled": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


class Predictor:
    """An artifact folder opened for inference: tokenizer, session and the manifest's settings."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.manifest = json.loads((self.folder / "edgec.json").read_text())
        self.task = self.manifest["task"]
        self.labels = self.manifest.get("labels") or {}
        self.inputs = [i["name"] for i in self.manifest["io"]["inputs"]]
        shape = self.manifest["io"]["inputs"][0]["shape"]
        # (batch, sequence) as ints where the graph fixes them (accelerator graphs), else None.
        self.fixed = tuple(shape) if all(isinstance(d, int) and d > 0 for d in shape) else None
        self.tokenizer = self._tokenizer(self.manifest["recipe"]["max_length"])
        # The settings chosen for this machine (edgec bench --tune), else the target's.
        self.session = self._session(
            self.manifest.get("session", {}).get("settings") or self.manifest["target"]["session"]
        )

    def _tokenizer(self, max_length: int) -> Tokenizer:
        tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        # The same truncation and padding as transformers' fast tokenizer call (`truncation=True, padding=True`).
        tokenizer.no_truncation()
        tokenizer.enable_truncation(max_length=self.fixed[1] if self.fixed else max_length)
        pad = _pad_token(self.folder)
        length = self.fixed[1] if self.fixed else None
        tokenizer.enable_padding(pad_id=tokenizer.token_to_id(pad), pad_token=pad, length=length)
        return tokenizer

    def _session(self, settings: dict) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings["intra_op_threads"]
        options.inter_op_num_threads = settings["inter_op_threads"]
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, _LEVELS[settings["graph_optimization_level"]]
        )
        options.execution_order = getattr(ort.ExecutionOrder, settings.get("execution_order", "default").upper())
        options.enable_cpu_mem_arena = settings.get("cpu_mem_arena", True)
        options.enable_mem_pattern = settings.get("mem_pattern", True)
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if settings.get("allow_spinning", True) else "0"
        )
        options.log_severity_level = 3
        return ort.InferenceSession(
            str(self.folder / self.manifest["model_file"]), options, providers=["CPUExecutionProvider"]
        )

    def encode(self, texts: list[str], pairs: list[str] | None = None) -> dict[str, np.ndarray]:
        """The model's int64 inputs for the texts (and second texts), padded to the longest (or the fixed length)."""
        encodings = self.tokenizer.encode_batch(list(zip(texts, pairs)) if pairs else texts)
        feeds = {
            "input_ids": np.asarray([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.asarray([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.asarray([e.type_ids for e in encodings], dtype=np.int64),
        }
        return {name: feeds[name] for name in self.inputs}

    def run(self, texts: list[str], pairs: list[str] | None = None) -> dict[str, np.ndarray]:
        """The artifact's named outputs for the texts, one row per text."""
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"got {len(pairs)} second texts for {len(texts)} texts")
        wanted = _OUTPUTS.get(self.task)
        names = [o.name for o in self.session.get_outputs() if wanted is None or o.name in wanted]
        step = self.fixed[0] if self.fixed else _BATCH
        parts: list[list[np.ndarray]] = []
        for start in range(0, len(texts), step):
            chunk, pair_chunk = texts[start : start + step], pairs[start : start + step] if pairs else None
            filler = step - len(chunk) if self.fixed else 0  # a fixed batch is filled up with empty texts
            feeds = self.encode(chunk + [""] * filler, pair_chunk + [""] * filler if pair_chunk else None)
            parts.append([np.asarray(v, dtype=np.float32)[: len(chunk)] for v in self.session.run(names, feeds)])
        return {name: _concatenate([p[i] for p in parts]) for i, name in enumerate(names)}

    def describe(self, texts: list[str], outputs: dict[str, np.ndarray]) -> list[dict]:
        """One record per text: the label and its probability (classifiers) or the embedding (embedding models)."""
        if self.task == "sequence-classification":
            probs = softmax(outputs["logits"])
            return [
                {
                    "text": t,
                    "label": self.labels.get(str(int(p.argmax())), str(int(p.argmax()))),
                    "probability": float(p.max()),
                }
                for t, p in zip(texts, probs)
            ]
        if self.task == "feature-extraction":
            return [{"text": t, "embedding": v.tolist()} for t, v in zip(texts, outputs["sentence_embedding"])]
        return [
            {"text": t, **{name: value[i].tolist() for name, value in outputs.items()}} for i, t in enumerate(texts)
        ]


def _concatenate(parts: list[np.ndarray]) -> np.ndarray:
    """Rows of every run; token-level outputs (rows, tokens, ...) zero-padded to the longest run's tokens."""
    longest = max(part.shape[1] for part in parts) if parts[0].ndim >= 3 else 0
    padded = [np.pad(p, [(0, 0), (0, longest - p.shape[1])] + [(0, 0)] * (p.ndim - 2)) if longest else p for p in parts]
    return np.concatenate(padded)


def _pad_token(folder: Path) -> str:
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = folder / name
        if path.is_file():
            token = json.loads(path.read_text()).get("pad_token")
            if token:
                return token["content"] if isinstance(token, dict) else token
    return "[PAD]"


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)


def _read_texts(arguments: list[str]) -> tuple[list[str], list[str] | None]:
    lines = arguments or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    split = [line.split("\t", 1) for line in lines]
    if all(len(parts) == 2 for parts in split) and split:
        return [a for a, _ in split], [b for _, b in split]
    return lines, None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Embed or classify texts with this edgec artifact.")
    parser.add_argument("texts", nargs="*", help="texts (default: one per line on stdin; TEXT<tab>PAIR for pairs)")
    parser.add_argument("--json", action="store_true", help="print the raw outputs as JSON")
    parser.add_argument(
        "--artifact", default=str(Path(__file__).resolve().parent), help="artifact folder (default: this file's)"
    )
    args = parser.parse_args(argv)
    predictor = Predictor(args.artifact)
    texts, pairs = _read_texts(args.texts)
    if not texts:
        print("predict.py: no texts; pass them as arguments or one per line on stdin", file=sys.stderr)
        return 2
    outputs = predictor.run(texts, pairs)
    if args.json:
        print(json.dumps({"task": predictor.task, "outputs": {k: v.tolist() for k, v in outputs.items()}}))
    else:
        for record in predictor.describe(texts, outputs):
            shown = {k: (f"[{len(v)} values]" if isinstance(v, list) else v) for k, v in record.items()}
            print("\t".join(f"{k}={v}" for k, v in shown.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
