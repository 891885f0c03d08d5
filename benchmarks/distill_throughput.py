"""Distillation throughput on mpnet at --prune 0.85: edgec's distillation before issue 14 against the teacher's
cache alone and against today's defaults, same student, batch, length and texts, rounds interleaved in one run.

    python benchmarks/distill_throughput.py               # measures, writes results-distill-throughput.json
    python benchmarks/distill_throughput.py --accuracy    # word embeddings trained vs frozen: STS-B dev Spearman
    python benchmarks/distill_throughput.py --render      # both RESULTS.md sections from the committed JSON

Three rows, each through edgec's one training loop (same student, batches, texts and loss code):
"before" is edgec's distillation before issue 14: the teacher's forward pass inside every step, the hidden-state loss
on all 12 layers, the word embeddings trained, and torch's default AdamW (its per-tensor loop on a CPU).
"cached" is issue 14's first change alone: the teacher's targets cached, hidden loss on 4 layers, the rest as before.
"after" is that with edgec's loop as it is now (fused AdamW), the word embeddings still trained; "frozen" is that with
the word embeddings frozen (train_word_embeddings off), the default DistillConfig since --accuracy measured what it
costs.
Examples per second count steady-state optimizer steps (from the second step on): the time between consecutive
loss calls covers loading, forward, backward and the optimizer step. The teacher's one pass over the texts (the
cache) is timed on its own and reported with the end-to-end rate.

--accuracy asks what freezing the word embeddings costs: the same student distilled for --accuracy-steps steps on
the same STS-B train sentences with the table trained and frozen, once per seed (the seed orders the batches; both
arms of a seed see the same ones), and each result's STS-B dev Spearman. The loop keeps its last weights (its
evaluation only counts calls, so nothing is chosen on dev), and dev is measured once per finished run.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models  # noqa: E402
from run import STS, machine, write_section  # noqa: E402

from edgec.artifacts.artifact import package_versions  # noqa: E402
from edgec.compression.training import resolve_precision  # noqa: E402
from edgec.data import Dataset, Example, read_sts_benchmark  # noqa: E402
from edgec.parity.evalset import reference_outputs  # noqa: E402
from edgec.recipe import DistillConfig, PruneConfig  # noqa: E402
from edgec.source import (  # noqa: E402
    load_source,
    save_pruned,
)
from edgec.stages import distill  # noqa: E402
from edgec.stages.prune import prune_source  # noqa: E402

RESULTS = HERE / "results-distill-throughput.json"
SECTION = "distill-throughput"
ACCURACY = HERE / "results-distill-accuracy.json"
ACCURACY_SECTION = "distill-accuracy"


def sentences(count: int) -> Dataset:
    """STS-B train sentences (both sides of each pair), the first `count` distinct ones."""
    pairs = read_sts_benchmark(STS / "sts-train.csv")
    texts = list(dict.fromkeys(t for e in pairs.examples for t in (e.text, e.text_pair)))
    return Dataset(tuple(Example(t) for t in texts[:count]), "STS-B train sentences")


def pruned_student(source, fraction: float):
    """mpnet pruned at `fraction` (calibrated on 256 STS-B train sentences), saved once under benchmarks/work."""
    folder = models.WORK / "distill-throughput" / f"mpnet-prune{fraction}"
    if not (folder / "config.json").exists():
        calib = sentences(256)
        result = prune_source(source, calib, PruneConfig(fraction=fraction), max_length=128, seed=0)
        save_pruned(dataclasses.replace(source, model=result.model), result.summary, folder)
    return load_source(folder).model


@contextlib.contextmanager
def default_adamw():
    """The loop's AdamW as torch builds it by default (the per-tensor loop on a CPU), as it was before issue 14."""
    fused = torch.optim.AdamW

    def adamw(params, **settings):
        return fused(params, **{**settings, "fused": None})

    torch.optim.AdamW = adamw  # type: ignore[misc, assignment]
    try:
        yield
    finally:
        torch.optim.AdamW = fused  # type: ignore[misc]


def timed_steps(prepared, student, steps: int) -> list[float]:
    """Seconds between consecutive loss calls over `steps` optimizer steps of the real loop (edgec.compression.training)."""
    stamps, real = [], distill.student_loss

    def stamped(ready, model):
        loss = real(ready, model)
        return lambda m, batch: (stamps.append(time.perf_counter()), loss(m, batch))[1]

    distill.student_loss = stamped
    try:
        distill.run(
            dataclasses.replace(prepared, config=dataclasses.replace(prepared.config, steps=steps, eval_every=steps)),
            student,
            lambda model: 0.0,
            seed=0,
            minutes=None,
        )
    finally:
        distill.student_loss = real
    return [b - a for a, b in zip(stamps[1:], stamps[2:])]  # noqa: RUF007 - from the second step on


def measure(args: argparse.Namespace) -> dict:
    source = load_source(models.mpnet())
    student = pruned_student(source, args.prune)
    data = sentences(args.texts)
    common = dict(batch_size=args.batch, max_length=args.max_length, precision="auto")
    configs = {
        "before": DistillConfig(**common, teacher_cache=False, hidden_layers=12, train_word_embeddings=True),
        "cached": DistillConfig(**common, train_word_embeddings=True),
        "after": DistillConfig(**common, train_word_embeddings=True),
        "frozen": DistillConfig(**common, train_word_embeddings=False),
    }
    legacy = {"before", "cached"}  # built with torch's default AdamW, as edgec's loop did before issue 14
    prepared = {name: distill.prepare(source.model, source, data, configs[name], 0) for name in ("before", "after")}
    for name in ("cached", "frozen"):  # one teacher pass for all the cached rows
        prepared[name] = dataclasses.replace(prepared["after"], config=configs[name])
    cache = prepared["after"].cache
    assert len(cache.encoded) == len(data), "the cache must hold every text for the same batches"
    per_round: dict[str, list[float]] = {name: [] for name in configs}
    for r in range(args.rounds):
        for name in list(configs) if r % 2 == 0 else list(reversed(configs)):
            with default_adamw() if name in legacy else contextlib.nullcontext():
                seconds = timed_steps(prepared[name], student, args.steps)
            per_round[name].append(args.batch / statistics.median(seconds))
            print(f"round {r}: {name} {per_round[name][-1]:.1f} examples/s", flush=True)
    rate = {name: statistics.median(values) for name, values in per_round.items()}
    return {
        **run_header(args),
        "texts": len(data),
        "mean_tokens": float(cache.encoded.lengths.mean()),
        "student_params": sum(p.numel() for p in student.parameters()),
        "examples_per_second": per_round,
        "median": rate,
        "speedup": rate["after"] / rate["before"],
        "speedup_cached": rate["cached"] / rate["before"],
        "speedup_frozen": rate["frozen"] / rate["before"],
        "cache": {
            "seconds": cache.seconds,
            "megabytes": cache.nbytes / 2**20,
            "layers": list(cache.layers),
            "teacher_examples_per_second": len(data) / cache.seconds,
        },
    }


def run_header(args: argparse.Namespace) -> dict:
    """What every results record of this script starts with: where, with what, and how it ran."""
    return {
        "machine": machine(),
        "versions": package_versions(),
        "precision": resolve_precision("auto")[1],
        "command": "python benchmarks/distill_throughput.py " + " ".join(sys.argv[1:]),
        "settings": {k: v for k, v in vars(args).items() if k != "note"},
        "note": args.note,
    }


def dev_spearman(source, model, max_length: int) -> float:
    """STS-B dev Spearman (x100) of `model`'s sentence embeddings (the source's pooling)."""
    dev = read_sts_benchmark(STS / "sts-dev.csv")
    return reference_outputs(dataclasses.replace(source, model=model), dev, max_length).reference_metric["spearman"]


def accuracy(args: argparse.Namespace) -> dict:
    """Word embeddings trained against frozen: STS-B dev Spearman after --accuracy-steps steps, one run per seed."""
    source = load_source(models.mpnet())
    student = pruned_student(source, args.prune)
    data = sentences(args.texts)
    steps = args.accuracy_steps
    config = DistillConfig(
        batch_size=args.batch, max_length=args.max_length, precision="auto", steps=steps, eval_every=steps
    )
    prepared = distill.prepare(source.model, source, data, config, 0)
    arms = {"trained": True, "frozen": False}
    spearman: dict[str, list[float]] = {name: [] for name in arms}
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    calls = itertools.count()  # a score that rises with every call: each run keeps its last weights
    for seed in range(args.seeds):
        for name in list(arms) if seed % 2 == 0 else list(reversed(arms)):
            run = dataclasses.replace(prepared, config=dataclasses.replace(config, train_word_embeddings=arms[name]))
            result = distill.run(run, student, lambda model: next(calls), seed=seed, minutes=None)
            assert result.best_step == steps, "the last weights must be the ones measured"
            spearman[name].append(dev_spearman(source, result.model, args.max_length))
            seconds[name].append(result.seconds)
            print(f"seed {seed}: {name} dev Spearman {spearman[name][-1]:.2f} ({result.seconds:.0f} s)", flush=True)
    return {
        **run_header(args),
        "texts": len(data),
        "teacher": dev_spearman(source, source.model, args.max_length),
        "pruned": dev_spearman(source, student, args.max_length),
        "spearman": spearman,
        "seconds": seconds,
    }


def with_earlier_runs(result: dict, earlier: dict | None) -> dict:
    """The new result, carrying the rates of every run it replaces: a rerun adds a run, it cannot hide one."""
    if earlier is None:
        return result
    kept = ("command", "examples_per_second", "median", "speedup_frozen")
    return {**result, "earlier": [*earlier.get("earlier", []), {k: earlier[k] for k in kept}]}


def frozen_over_before(run: dict) -> list[float]:
    """The default (frozen) rate over the before rate, round by round (the two ran side by side in each round)."""
    rates = run["examples_per_second"]
    return [f / b for f, b in zip(rates["frozen"], rates["before"])]


def end_to_end(result: dict, epochs: int) -> float:
    """Examples per second of "frozen" (what edgec runs by default) with the teacher's one pass charged to it, over
    `epochs` passes of the texts: 1 / (1 / training rate + 1 / (epochs x teacher rate))."""
    return 1.0 / (1.0 / result["median"]["frozen"] + 1.0 / (epochs * result["cache"]["teacher_examples_per_second"]))


def markdown(result: dict) -> str:
    s, rate, cache = result["settings"], result["median"], result["cache"]
    rounds = lambda name: ", ".join(f"{v:.1f}" for v in result["examples_per_second"][name])  # noqa: E731
    once, thrice = end_to_end(result, 1), end_to_end(result, 3)
    return (
        "\n".join(
            [
                f"## Distillation throughput: mpnet at --prune {s['prune']}, before and after issue 14",
                "",
                f"Machine: {result['machine']}. Training precision: {result['precision']}. Versions: "
                + ", ".join(f"{k} {v}" for k, v in result["versions"].items())
                + ".",
                f"Command: `{result['command']}`. {result['texts']} STS-B train sentences ({result['mean_tokens']:.1f} "
                f"tokens on average), batch {s['batch']}, max length {s['max_length']}, {s['steps']} optimizer steps per run, "
                f"{s['rounds']} rounds interleaved; student {result['student_params'] / 1e6:.1f} M parameters.",
                *([result["note"]] if result.get("note") else []),
                "",
                "| distillation | examples/s (median of rounds) | per round | vs before |",
                "|---|---|---|---|",
                f"| before: teacher forward in every step, hidden loss on 12 layers, word embeddings trained, "
                f"AdamW's per-tensor loop | {rate['before']:.1f} | {rounds('before')} | 1.00 |",
                f"| cached: teacher cached, hidden loss on layers {', '.join(map(str, cache['layers']))}, the rest as "
                f"before | {rate['cached']:.1f} | {rounds('cached')} | {result['speedup_cached']:.2f} |",
                f"| after: cached, fused AdamW, word embeddings trained | {rate['after']:.1f} | {rounds('after')} | "
                f"{result['speedup']:.2f} |",
                f"| frozen: after, with the word embeddings kept as pruning left them (`train_word_embeddings` off, "
                f"the default since the accuracy check below) | {rate['frozen']:.1f} | {rounds('frozen')} | "
                f"**{result['speedup_frozen']:.2f}** |",
                "",
                f"The teacher's one pass (PyTorch, {result['precision'].split(':')[-1].split(',')[0].strip()}, "
                f"length-sorted batches of 64) took {cache['seconds']:.1f} s for "
                f"{result['texts']} texts ({cache['teacher_examples_per_second']:.0f} texts/s) and holds "
                f"{cache['megabytes']:.0f} MB. With that pass charged to the default (frozen) run, the end-to-end rate is "
                f"{once:.1f} examples/s ({once / rate['before']:.2f}x before) when each text is seen once, "
                f"{thrice:.1f} ({thrice / rate['before']:.2f}x) over three passes.",
                *runs_compared(result),
            ]
        )
        + "\n"
    )


def runs_compared(result: dict) -> list[str]:
    """The frozen / before ratio per round in this run and in every earlier run, and all rounds pooled."""
    runs = [*result.get("earlier", []), result]
    if len(runs) == 1:
        return []
    ratios = lambda run: ", ".join(f"{r:.2f}" for r in frozen_over_before(run))  # noqa: E731
    pooled = [r for run in runs for r in frozen_over_before(run)]
    return [
        "",
        "Frozen over before, round by round, in every run of this benchmark (a rerun keeps the runs it replaces):",
        "",
        *(f"- `{run['command']}`: {ratios(run)} (ratio of the medians {run['speedup_frozen']:.2f})" for run in runs),
        "",
        f"All {len(pooled)} rounds pooled: median {statistics.median(pooled):.2f}x.",
    ]


def accuracy_markdown(result: dict) -> str:
    s, values = result["settings"], result["spearman"]
    differences = [f - t for t, f in zip(values["trained"], values["frozen"])]
    spread = statistics.stdev(values["trained"]) if len(values["trained"]) > 1 else float("nan")
    row = lambda name: (  # noqa: E731
        f"| {name} | {statistics.mean(values[name]):.2f} | {', '.join(f'{v:.2f}' for v in values[name])} |"
    )
    return (
        "\n".join(
            [
                f"## Distillation with the word embeddings frozen: what it costs on STS-B (mpnet at --prune {s['prune']})",
                "",
                f"Machine: {result['machine']}. Training precision: {result['precision']}.",
                f"Command: `{result['command']}`. The pruned student distilled for {s['accuracy_steps']} steps of batch "
                f"{s['batch']} on {result['texts']} STS-B train sentences (DistillConfig's defaults otherwise), once "
                f"per seed ({s['seeds']} seeds: the seed orders the batches, the same for both arms), the last weights "
                "kept (nothing chosen on dev); STS-B dev Spearman x100 of each finished run.",
                *([result["note"]] if result.get("note") else []),
                "",
                "| word embeddings | dev Spearman (mean) | per seed |",
                "|---|---|---|",
                row("trained"),
                row("frozen"),
                "",
                f"Frozen minus trained, seed by seed: {', '.join(f'{d:+.2f}' for d in differences)} (mean "
                f"{statistics.mean(differences):+.2f}); the trained arm's spread across seeds (standard deviation) is "
                f"{spread:.2f}. For scale: the unpruned teacher scores {result['teacher']:.2f} and the pruned student "
                f"before distillation {result['pruned']:.2f}.",
            ]
        )
        + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prune", type=float, default=0.85)
    parser.add_argument("--texts", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--accuracy", action="store_true", help="Measure trained vs frozen word embeddings.")
    parser.add_argument("--accuracy-steps", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--note", default="", help="A sentence on how the run went, kept with its figures.")
    parser.add_argument("--render", action="store_true", help="Write the RESULTS.md sections from the committed JSON.")
    args = parser.parse_args()
    if args.accuracy:
        ACCURACY.write_text(json.dumps(accuracy(args), indent=2) + "\n")
    elif not args.render:
        earlier = json.loads(RESULTS.read_text()) if RESULTS.exists() else None
        RESULTS.write_text(json.dumps(with_earlier_runs(measure(args), earlier), indent=2) + "\n")
    for path, section, render in ((RESULTS, SECTION, markdown), (ACCURACY, ACCURACY_SECTION, accuracy_markdown)):
        if path.exists():
            text = render(json.loads(path.read_text()))
            write_section(HERE / "RESULTS.md", section, text, "benchmarks/distill_throughput.py")
            print(text)


if __name__ == "__main__":
    main()
