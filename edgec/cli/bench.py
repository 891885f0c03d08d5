"""edgec bench ARTIFACT --batch 1 --seq-len 128 [--baseline pytorch] [--json]"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from edgec.artifact import load_artifact
from edgec.bench import BenchConfig, bench_onnx, bench_pytorch
from edgec.cli.common import errors_to_exit_codes, stdout, table
from edgec.errors import ConfigError, InputError
from edgec.package import record_bench


def register(app: typer.Typer) -> None:
    app.command("bench")(errors_to_exit_codes(bench))


def bench(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder written by `edgec build`.")],
    batch: Annotated[int, typer.Option(help="Batch size.")] = 1,
    seq_len: Annotated[int, typer.Option(help="Tokens per input.")] = 128,
    threads: Annotated[int, typer.Option(help="Intra-op threads.")] = 2,
    runs: Annotated[int, typer.Option(help="Timed runs after warm-up.")] = 200,
    warmup: Annotated[int, typer.Option(help="Untimed runs first.")] = 20,
    baseline: Annotated[str | None, typer.Option(help="Also measure `pytorch` (the uncompressed source model).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    record: Annotated[bool, typer.Option(
        help="Keep the figures in the artifact folder (manifest, report, model card).",
    )] = True,
) -> None:
    """Latency p50/p90/p99, throughput, peak memory and file size of an artifact, recorded in it (--no-record: not)."""
    if min(batch, seq_len, threads, runs) < 1 or warmup < 0:
        raise ConfigError("--batch, --seq-len, --threads and --runs must be >= 1 (and --warmup >= 0)")
    if baseline not in (None, "pytorch"):
        raise ConfigError(f"unknown --baseline {baseline!r}; the only baseline is `pytorch`")
    loaded = load_artifact(artifact)
    config = BenchConfig(batch=batch, seq_len=seq_len, threads=threads, warmup=warmup, runs=runs)
    vocab_size = len(loaded.tokenizer())
    graph_level = loaded.manifest["target"]["session"]["graph_optimization_level"]
    results = [bench_onnx(str(loaded.model_path), vocab_size, config, graph_level)]
    if baseline:
        source = loaded.manifest["source"]["path"]
        if not Path(source).is_dir():
            raise InputError(f"the source model {source} is not on this machine; run without --baseline")
        results.append(bench_pytorch(source, loaded.manifest["task"], vocab_size, config))
    report = {
        "config": asdict(config),
        "model_bytes": loaded.model_path.stat().st_size,
        "results": [asdict(r) for r in results],
        "speedup_vs_pytorch": results[1].p50_ms / results[0].p50_ms if baseline else None,
    }
    if record and artifact.is_dir():  # a .zip bundle is read from a temporary copy: nothing to record into
        record_bench(loaded, report)
    if as_json:
        print(json.dumps(report, indent=2))
        return
    rows = [
        [r.runtime, f"{r.p50_ms:.2f}", f"{r.p90_ms:.2f}", f"{r.p99_ms:.2f}", f"{r.throughput_per_s:.1f}", f"{r.peak_rss_mb:.0f}"]
        for r in results
    ]
    title = f"{artifact} ({report['model_bytes'] / 1e6:.1f} MB), batch {batch}, seq {seq_len}, {threads} threads"
    stdout.print(table(title, ["runtime", "p50 ms", "p90 ms", "p99 ms", "inputs/s", "peak RSS MB"], rows))
    if baseline:
        stdout.print(f"speed-up vs PyTorch fp32 (p50): {report['speedup_vs_pytorch']:.2f}x")
    if loaded.manifest.get("engine"):
        stdout.print("note: ONNX Runtime CPU timed the ONNX the TensorRT engine is built from; these are not engine figures "
                     "(trtexec --loadEngine=model.engine times the engine on its GPU)")
