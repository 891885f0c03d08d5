"""edgec bench ARTIFACT --batch 1 --seq-len 128 [--baseline pytorch] [--profile] [--tune] [--json]"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from edgec.artifacts.artifact import Artifact, load_artifact
from edgec.artifacts.manifest import SessionRecord
from edgec.artifacts.package import record_bench
from edgec.cli.common import command, stdout, table
from edgec.cli.options import ArtifactPath, AsJson, TimingBatch, TimingSeqLen
from edgec.errors import ConfigError, InputError
from edgec.hardware import host
from edgec.running.bench import BenchConfig, bench_model, bench_pytorch, profile_onnx, session_for
from edgec.running.profiling import NODE_HEADER, OPERATOR_HEADER, node_rows, operator_rows
from edgec.running.tuning import onnx_latency, tune_session

BUSY_MACHINE = 0.05
"""Other load above which timings are flagged. ONNX Runtime's threads meet at every operator, so one busy process
stalls them all: on 2 cores, a niced Python process made an int8 mpnet run take 150 ms instead of 42."""


def register(app: typer.Typer) -> None:
    command(app, "bench", bench)


def bench(
    artifact: ArtifactPath,
    batch: TimingBatch = 1,
    seq_len: TimingSeqLen = 128,
    threads: Annotated[
        int | None, typer.Option(help="Intra-op threads (default: the artifact's session settings).")
    ] = None,
    runs: Annotated[int, typer.Option(help="Timed runs after warm-up.")] = 200,
    warmup: Annotated[int, typer.Option(help="Untimed runs first.")] = 20,
    baseline: Annotated[
        str | None, typer.Option(help="Also measure `pytorch` (the uncompressed source model).")
    ] = None,
    profile: Annotated[
        bool, typer.Option("--profile", help="Also show where the time goes (ONNX Runtime's profiler).")
    ] = False,
    tune: Annotated[
        bool,
        typer.Option(
            "--tune",
            help="Measure session settings on this machine first and record the "
            "fastest in the artifact's manifest (run and bench then use them).",
        ),
    ] = False,
    as_json: AsJson = False,
    record: Annotated[
        bool,
        typer.Option(
            help="Keep the figures in the artifact folder (manifest, report, model card).",
        ),
    ] = True,
) -> None:
    """Latency p50/p90/p99, throughput, peak memory and file size of an artifact, recorded in it (--no-record: not)."""
    if min(batch, seq_len, runs) < 1 or warmup < 0 or (threads is not None and threads < 1):
        raise ConfigError("--batch, --seq-len, --threads and --runs must be >= 1 (and --warmup >= 0)")
    if baseline not in (None, "pytorch"):
        raise ConfigError(f"unknown --baseline {baseline!r}; the only baseline is `pytorch`")
    if tune and threads is not None:
        raise ConfigError("--tune measures the thread count itself; leave out --threads")
    loaded = load_artifact(artifact)
    if (profile or tune) and loaded.model_path.suffix == ".pte":
        raise ConfigError("--profile and --tune measure ONNX Runtime sessions; an ExecuTorch program takes neither")
    config = BenchConfig(batch=batch, seq_len=seq_len, threads=threads, warmup=warmup, runs=runs)
    vocab_size = len(loaded.tokenizer())
    report: dict = {"config": asdict(config)}
    if tune:
        loaded, report["tuning"] = _tune(loaded, vocab_size, config)
    settings = session_for(config, loaded.session)
    report["session"] = asdict(settings)
    results = [bench_model(str(loaded.model_path), vocab_size, config, settings)]
    if baseline:
        source = loaded.manifest.source.path
        if not Path(source).is_dir():
            raise InputError(f"the source model {source} is not on this machine; run without --baseline")
        results.append(bench_pytorch(source, loaded.manifest.task, vocab_size, config))
    measured = (
        profile_onnx(str(loaded.model_path), vocab_size, dataclasses.replace(config, runs=min(runs, 50)), settings)
        if profile
        else None
    )
    report |= {
        "host": host().to_dict(),
        "model_bytes": loaded.model_path.stat().st_size,
        "results": [asdict(r) for r in results],
        "speedup_vs_pytorch": results[1].p50_ms / results[0].p50_ms if baseline else None,
        "profile": measured.to_dict() if measured else None,
    }
    if record and artifact.is_dir():  # a .zip bundle is read from a temporary copy: nothing to record into
        # The report shows where the time goes where --profile measured it (the build's own profile is not kept).
        record_bench(
            loaded,
            {k: v for k, v in report.items() if k != "profile"},
            (measured, asdict(config)) if measured else None,
        )
    if as_json:
        print(json.dumps(report, indent=2))
        return
    _print(artifact, loaded, report, results, measured)


def _tune(loaded: Artifact, vocab_size: int, config: BenchConfig) -> tuple[Artifact, dict]:
    """Tune the session settings here and record the winner in the manifest (the files it hashes are untouched)."""
    measure = onnx_latency(str(loaded.model_path), vocab_size, config)
    chosen, trials = tune_session(measure, loaded.session)
    where = host()
    manifest = dataclasses.replace(
        loaded.manifest,
        session=SessionRecord(
            settings=chosen,
            chosen_by=f"edgec bench --tune on {where.model} ({where.instruction_set}), batch {config.batch}, seq {config.seq_len}",
        ),
    )
    manifest.write(loaded.path)
    tuning = {
        "chosen": asdict(chosen),
        "trials": [{"knob": t.knob, "value": t.value, "p50_ms": t.p50_ms} for t in trials],
    }
    return Artifact(loaded.path, manifest), tuning


def _print(artifact: Path, loaded: Artifact, report: dict, results: list, measured) -> None:
    config = report["config"]
    if "tuning" in report:
        rows = [
            [
                t["knob"],
                str(t["value"]),
                " / ".join(f"{ms:.2f}" for ms in t["p50_ms"]),
                "<-" if report["tuning"]["chosen"][t["knob"]] == t["value"] else "",
            ]
            for t in report["tuning"]["trials"]
        ]
        stdout.print(
            table(
                "session tuning (p50 ms per round; the chosen value is recorded in edgec.json)",
                ["setting", "value", "p50 ms", "chosen"],
                rows,
            )
        )
    rows = [
        [
            r.runtime,
            f"{r.p50_ms:.2f}",
            f"{r.p90_ms:.2f}",
            f"{r.p99_ms:.2f}",
            f"{r.throughput_per_s:.1f}",
            f"{r.peak_rss_mb:.0f}",
        ]
        for r in results
    ]
    title = (
        f"{artifact} ({report['model_bytes'] / 1e6:.1f} MB), batch {config['batch']}, seq {config['seq_len']}, "
        f"{report['session']['intra_op_threads'] or 'all'} threads, {report['host']['instruction_set']}"
    )
    stdout.print(table(title, ["runtime", "p50 ms", "p90 ms", "p99 ms", "inputs/s", "peak RSS MB"], rows))
    if report["speedup_vs_pytorch"]:
        stdout.print(f"speed-up vs PyTorch fp32 (p50): {report['speedup_vs_pytorch']:.2f}x")
    busiest = max((r.other_load for r in results if r.other_load is not None), default=None)
    if busiest is not None and busiest > BUSY_MACHINE:
        stdout.print(
            f"warning: other processes took {busiest:.0%} of this machine's CPU while timing, so these figures are "
            "slower than a quiet machine's; rerun with the machine to itself"
        )
    if measured:
        caption = f"{measured.runs} profiled runs, {measured.kernel_ms:.2f} ms of kernels per run"
        stdout.print(table(f"time per operator type ({caption})", OPERATOR_HEADER, operator_rows(measured)))
        stdout.print(table(f"the {len(measured.nodes)} slowest nodes", NODE_HEADER, node_rows(measured)))
    if loaded.manifest.engine:
        stdout.print(
            "note: ONNX Runtime CPU timed the ONNX the TensorRT engine is built from; these are not engine figures "
            "(trtexec --loadEngine=model.engine times the engine on its GPU)"
        )
