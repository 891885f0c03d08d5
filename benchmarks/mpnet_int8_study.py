"""Why static int8 moves all-mpnet-base-v2's embeddings, and what fixes it: measured on STS-B dev only.

    python benchmarks/mpnet_int8_study.py                       # mpnet, then the MiniLM check
    python benchmarks/mpnet_int8_study.py --models minilm --steps final
    python benchmarks/mpnet_int8_study.py --render              # RESULTS.md section from the committed JSON

Every int8 model here is built from edgec's own fp32 graph for the `ort-x86` profile (fused, as the int8 build
quantizes it) with the quantize stage's own functions (smoothing, calibration, outlier split, Q/DQ), calibrated on
256 STS-B train sentences as benchmarks/run.py calibrates. Accuracy is the cosine of each sentence embedding to the
fp32 graph's (mean, worst) and the dev Spearman; nothing here reads STS-B test. Steps:
- stats: per-channel peaks (max |x| over the calibration tokens) at every weight-MatMul input: the largest four,
  the median channel's, and their ratio (the spread).
- localise: the int8 model as edgec built it before this study (GELU outputs not smoothed), with all but one kind of
  MatMul (QKV, attention output, FFN in, FFN out) kept float, then all but one layer's FFN down-projection.
- variants: smoothing alpha, calibration method, the outlier split, no smoothing, on the first --pairs dev pairs.
- final: before and after this study's change, and the outlier split, on all 1,500 dev pairs; latency at 128 tokens
  (batch 1, 2 threads, interleaved rounds, each in a fresh process) with Optimum's dynamic int8 beside them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models  # noqa: E402
from run import STS, WORK, machine, optimum_dynamic_int8, per_row, time_rows, write_section  # noqa: E402

import edgec  # noqa: E402
from edgec.data import Dataset, read_sts_benchmark  # noqa: E402
from edgec.ops import outliers  # noqa: E402
from edgec.ops.graph import producers  # noqa: E402
from edgec.parity.metrics import cosine_rows, pair_spearman  # noqa: E402
from edgec.recipe import QuantConfig  # noqa: E402
from edgec.running.inference import encode_batches, ort_session  # noqa: E402
from edgec.source import load_source  # noqa: E402
from edgec.stages import quantize  # noqa: E402
from edgec.sweep import MEASURE_ONLY  # noqa: E402
from edgec.targets import load_target  # noqa: E402

RESULTS = HERE / "results-mpnet-int8-study.json"
GELU_OPS = ("Gelu", "FastGelu", "BiasGelu", "QuickGelu")
# The kind of a weight MatMul, from the exporter's node names (MPNet's, then BERT's); the first match wins.
KINDS = {
    "attention output": ("/attn/o/", "/attention/output/dense"),
    "QKV": ("/attn/q/", "/attn/k/", "/attn/v/", "/attention/self/"),
    "FFN in": ("/intermediate/dense",),
    "FFN out (down-projection)": ("/output/dense",),
}


def kind_of(node_name: str) -> str | None:
    return next((kind for kind, marks in KINDS.items() if any(m in node_name for m in marks)), None)


@dataclasses.dataclass(frozen=True)
class Variant:
    smooth_gelu: bool = True
    """Smooth the FFN down-projection's input (the GELU output) too: edgec's rule after this study."""
    smoothing: bool = True
    alpha: float = quantize.SMOOTHING_ALPHA
    calibration: str = "percentile"
    percentile: float = 99.999
    split_outliers: bool = False


BEFORE, AFTER = Variant(smooth_gelu=False), Variant()
VARIANTS = {
    "before (GELU outputs not smoothed)": BEFORE,
    "after (every input smoothed, alpha 0.8)": AFTER,
    "no smoothing": Variant(smoothing=False),
    "outlier split, GELU outputs not smoothed": Variant(smooth_gelu=False, split_outliers=True),
    "every input smoothed, alpha 0.5": Variant(alpha=0.5),
    "every input smoothed, alpha 0.65": Variant(alpha=0.65),
    "every input smoothed, alpha 0.9": Variant(alpha=0.9),
    "every input smoothed, minmax": Variant(calibration="minmax"),
    "every input smoothed, entropy": Variant(calibration="entropy"),
    "every input smoothed, percentile 99.99": Variant(percentile=99.99),
}
FINAL = (
    "before (GELU outputs not smoothed)",
    "after (every input smoothed, alpha 0.8)",
    "outlier split, GELU outputs not smoothed",
)


class Study:
    """One model's fp32 graph, calibration feeds and dev data; builds and scores int8 variants of it."""

    def __init__(self, name: str, fp32: Path, work: Path):
        self.name, self.fp32, self.work = name, fp32, work
        self.source = load_source(getattr(models, name)())
        self.profile = load_target("ort-x86")
        self.session = dataclasses.replace(self.profile.session, intra_op_threads=2)
        calib = read_sts_benchmark(STS / "sts-train.csv").single_texts().sample(256, 0)
        self.calib_feeds = [b.feeds for b in self._batches(calib, 16)]
        self.dev = read_sts_benchmark(STS / "sts-dev.csv")
        self._reference: dict[int, np.ndarray] = {}

    def _batches(self, data: Dataset, size: int = 32):
        return encode_batches(self.source.tokenizer, data, max_length=384, batch_size=size)

    def embed(self, path: Path, pairs: Dataset) -> np.ndarray:
        session = ort_session(path, self.session)
        batches = self._batches(pairs.single_texts())
        out = np.zeros((2 * len(pairs), self.source.model.config.hidden_size), np.float32)
        for batch in batches:
            out[batch.indices] = session.run(["sentence_embedding"], batch.feeds)[0]
        return out

    def score(self, path: Path, pairs: Dataset) -> dict:
        if len(pairs) not in self._reference:
            self._reference[len(pairs)] = self.embed(self.fp32, pairs)
        embeddings, reference = self.embed(path, pairs), self._reference[len(pairs)]
        cosine = cosine_rows(embeddings, reference)
        scores = np.array([e.score for e in pairs.examples])
        return {
            "cosine_mean": float(cosine.mean()),
            "cosine_min": float(cosine.min()),
            "spearman": pair_spearman(embeddings, scores),
            "fp32_spearman": pair_spearman(reference, scores),
        }

    def prepare(self, variant: Variant) -> tuple[Path, dict, dict]:
        """The stage's prepare_static with the variant's choices: (prepared model, ranges, outlier channels)."""
        model = quantize.with_types(onnx.load(str(self.fp32)))
        if variant.smoothing:
            groups = quantize.smoothable_groups(model)
            if not variant.smooth_gelu:
                made = producers(model)
                groups = {k: v for k, v in groups.items() if getattr(made.get(k), "op_type", None) not in GELU_OPS}
            model = quantize.smooth(model, groups, self.calib_feeds, self.session, variant.alpha)
        settings = dataclasses.replace(self.profile.quantization, split_outliers=variant.split_outliers)
        quant = QuantConfig(calibration=variant.calibration, percentile=variant.percentile)
        ranges, _, split = quantize.calibrate(model, self.calib_feeds, quant, settings, self.session)
        for node in quantize.weight_matmuls(model):
            if node.input[0] in split:
                outliers.split_outlier_channels(model, node, split[node.input[0]])
        model = quantize.with_types(model) if split else model
        path = self.work / "prepared.onnx"
        onnx.save(model, str(path))
        return path, ranges, split

    def quantized(self, prepared: Path, ranges: dict, variant: Variant, out: Path, keep_float=()) -> Path:
        settings = dataclasses.replace(self.profile.quantization, split_outliers=variant.split_outliers)
        quantize.quantize_static_int8(prepared, out, ranges, settings, exclude=tuple(keep_float))
        return out


def channel_stats(study: Study) -> dict[str, dict]:
    model = quantize.with_types(onnx.load(str(study.fp32)))
    names = sorted({n.input[0] for n in quantize.weight_matmuls(model)})
    stats = quantize.collect_stats(model, names, study.calib_feeds, study.session)
    found = {}
    for name in names:
        peak = stats[name].channel_absmax
        order = np.argsort(-peak)
        found[name] = {
            "top4": [round(float(peak[i]), 2) for i in order[:4]],
            "top_channels": [int(i) for i in order[:4]],
            "median": round(float(np.median(peak)), 3),
            "spread": round(float(peak[order[0]] / np.median(peak)), 1),
        }
    return found


def localise(study: Study, pairs: Dataset, log) -> None:
    prepared, ranges, _ = study.prepare(BEFORE)
    names = [n.name for n in quantize.weight_matmuls(onnx.load(str(prepared)))]
    out = study.work / "int8.onnx"
    for kind in KINDS:
        keep = [n for n in names if kind_of(n) != kind]
        log("localise", f"only {kind} int8", study.score(study.quantized(prepared, ranges, BEFORE, out, keep), pairs))
    down = [n for n in names if kind_of(n) == "FFN out (down-projection)"]
    for layer, node in enumerate(down):
        keep = [n for n in names if n != node]
        log(
            "localise",
            f"only layer {layer}'s FFN out int8",
            study.score(study.quantized(prepared, ranges, BEFORE, out, keep), pairs),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mpnet,minilm")
    parser.add_argument("--steps", default="stats,localise,variants,final,latency")
    parser.add_argument("--pairs", type=int, default=200, help="dev pairs for localise and variants")
    parser.add_argument("--fp32", type=Path, help="an edgec fp32 ort-x86 artifact's model.onnx (one model)")
    parser.add_argument("--optimum", type=Path, help="Optimum's dynamic int8 model.onnx (one model)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--render", action="store_true")
    args = parser.parse_args()
    record = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if not args.render:
        record["machine"] = machine()
        record.setdefault("commands", []).append(
            ("python benchmarks/mpnet_int8_study.py " + " ".join(sys.argv[1:])).strip()
        )
        for name in args.models.split(","):
            models_done = record.setdefault("models", {})
            models_done[name] = run_model(name, args, models_done.get(name))
            RESULTS.write_text(json.dumps(record, indent=1))
    write_section(args.output, "mpnet-int8-study", markdown(record), script="benchmarks/mpnet_int8_study.py")
    print(markdown(record), flush=True)


def run_model(name: str, args, previous: dict | None) -> dict:
    """The steps asked for, added to (or replacing those of) the model's previous result."""
    model_dir = getattr(models, name)()
    folder = WORK / name / "int8-study"
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = args.fp32
    if fp32 is None:
        calib = read_sts_benchmark(STS / "sts-train.csv").single_texts()
        recipe = edgec.Recipe(quant=edgec.QuantConfig(precision="fp32"), parity=MEASURE_ONLY)
        fp32 = edgec.build(model_dir, "ort-x86", recipe=recipe, calib=calib, out=folder / "fp32", force=True).model_path
    result: dict = previous or {"steps": {}}
    started = time.perf_counter()

    def log(step: str, label: str, value) -> None:
        result["steps"].setdefault(step, {})[label] = value
        print(f"{name} {step} {label}: {value} ({time.perf_counter() - started:.0f} s)", flush=True)

    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        study = Study(name, fp32, Path(tmp))
        subset = study.dev.subset(range(args.pairs))
        steps = args.steps.split(",")
        if "stats" in steps:
            for input_name, stats in channel_stats(study).items():
                log("stats", input_name, stats)
        if "localise" in steps:
            localise(study, subset, log)
        if "variants" in steps:
            for label, variant in VARIANTS.items():
                prepared, ranges, split = study.prepare(variant)
                scored = study.score(study.quantized(prepared, ranges, variant, study.work / "int8.onnx"), subset)
                log("variants", label, scored | {"outlier_channels_in_float": int(sum(len(v) for v in split.values()))})
        if "final" in steps:
            for index, label in enumerate(FINAL):
                prepared, ranges, _ = study.prepare(VARIANTS[label])
                path = study.quantized(prepared, ranges, VARIANTS[label], folder / f"{index}.onnx")
                log("final", label, study.score(path, study.dev))
        if "latency" in steps:  # the final step's models, timed again on a quiet machine
            optimum = args.optimum or optimum_dynamic_int8(model_dir, folder / "optimum", study.source)[0]
            rows = {label: {"path": str(folder / f"{index}.onnx")} for index, label in enumerate(FINAL)}
            rows["Optimum dynamic int8"] = {"path": str(optimum)}
            rounds, _ = time_rows(rows, model_dir, len(study.source.tokenizer), [128], args.rounds, args.runs)
            latency = per_row(rounds, statistics.median)
            log("latency", "ms at 128 tokens", {label: by_length[128] for label, by_length in latency.items()})
    result.setdefault("seconds", {})[args.steps] = time.perf_counter() - started
    return result


def markdown(record: dict) -> str:
    lines = [
        "## Static int8 accuracy of all-mpnet-base-v2 (issue 13): where it is lost, what fixes it (STS-B dev)",
        "",
        f"Machine: {record.get('machine')}. Commands, in order: {'; '.join(f'`{c}`' for c in record.get('commands', []))}. Calibration: 256 STS-B train sentences; "
        "accuracy: cosine of each dev sentence's embedding to edgec's fp32 graph's (mean / worst) and dev Spearman. "
        "Localise and variants: the first 200 dev pairs; final: all 1,500.",
    ]
    for name, result in record.get("models", {}).items():
        steps = result["steps"]
        if "stats" in steps:
            lines += [
                "",
                f"### {name}: channel spread at FFN down-projection inputs (GELU outputs), calibration tokens",
                "",
            ]
            lines += ["| input | largest four channel peaks | median peak | spread |", "|---|---|---|---|"]
            for input_name, s in steps["stats"].items():
                if "intermediate" in input_name:
                    lines.append(f"| {input_name} | {', '.join(map(str, s['top4']))} | {s['median']} | {s['spread']} |")
        for step, title in (
            ("localise", "one kind / one layer int8, the rest float (before)"),
            ("variants", "variants"),
            ("final", "all of dev"),
        ):
            if step not in steps:
                continue
            lines += [
                "",
                f"### {name}: {title}",
                "",
                "| build | cosine mean / worst | Spearman (fp32) |",
                "|---|---|---|",
            ]
            for label, s in steps[step].items():
                lines.append(
                    f"| {label} | {s['cosine_mean']:.4f} / {s['cosine_min']:.4f} | {s['spearman']:.2f} ({s['fp32_spearman']:.2f}) |"
                )
        if "latency" in steps:
            latency = steps["latency"]["ms at 128 tokens"]
            lines += ["", f"### {name}: latency, batch 1, 128 tokens, 2 threads", ""]
            lines += ["| build | ms | / Optimum dynamic int8 |", "|---|---|---|"]
            lines += [f"| {k} | {v:.2f} | {v / latency['Optimum dynamic int8']:.2f} |" for k, v in latency.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
