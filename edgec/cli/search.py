"""edgec search MODEL --max-latency-ms MS [--max-size-mb MB] [--max-drop D] --eval FILE --out DIR: the fastest
artifact within every budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgec.budget_search import Candidate, unmet_message
from edgec.budget_search import search as search_candidates
from edgec.cli.build_options import BuildOptions, SearchBudgets
from edgec.cli.common import command, numbers, print_summary, stage_progress, stdout, table
from edgec.cli.options import ModelFolder
from edgec.errors import BudgetError, ConfigError
from edgec.parity.evalset import selection_split


def register(app: typer.Typer) -> None:
    command(app, "search", search)


def search(
    model: ModelFolder,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the chosen candidate's artifact.")],
    options: BuildOptions,
    limits: SearchBudgets,
) -> None:
    """Build the fastest prune fraction x precision that meets every budget (--max-latency-ms, --max-size-mb, with
    --max-drop for accuracy) on an ONNX Runtime target; exit 1, saving the closest candidate, when none does.

    Candidates are measured on a sample of the selection part of --eval (--search-samples); the chosen one is built
    again at --out and gated on the held-out rest, which no choice was made on.
    """
    if not limits.requested:
        raise ConfigError(
            "edgec search needs a budget: pass --max-latency-ms and/or --max-size-mb "
            "(--max-drop alone is `edgec build`)"
        )
    run_search(model, out, options, limits)


def run_search(model: str, out: Path, options: BuildOptions, limits: SearchBudgets) -> None:
    """The search, its table of candidates and the chosen artifact's summary (`edgec search`, and `edgec build` with
    a latency or size budget)."""
    recipe = options.recipe()
    calib, eval_set, train = options.data()
    budgets = limits.budgets(options.thresholds.max_drop)
    fractions = tuple(numbers(limits.search_prune, "--search-prune"))
    ray = limits.ray.cluster()
    evaluation = eval_set or calib
    if evaluation is None:
        raise ConfigError("a budgeted search measures the drop on data; pass --eval (or --calib)")
    with stage_progress() as on_stage:
        _, chosen, tried = search_candidates(
            model,
            options.target,
            budgets=budgets,
            recipe=recipe,
            calib=calib,
            eval=evaluation,
            train=train,
            out=out,
            bench=limits.bench(),
            fractions=fractions,
            samples=limits.search_samples,
            force=options.force,
            load=options.loading.options,
            on_stage=on_stage,
            ray=ray,
        )
    selection, held_out = selection_split(evaluation, recipe.seed)
    examples = min(limits.search_samples, len(selection))
    stdout.print(
        table(
            f"budgeted search ({examples} selection examples per candidate; {len(held_out)} held out for the gate)",
            ["candidate", "drop", "latency ms", "size MB", "budgets", "chosen"],
            [_row(c, chosen) for c in tried],
        )
    )
    print_summary(out)
    if chosen.over:
        raise BudgetError(unmet_message(chosen, tried, out))


def _row(candidate: Candidate, chosen: Candidate) -> list[str]:
    budgets = ", ".join(f"{k.removeprefix('max_')} +{v:.0%}" for k, v in candidate.over.items()) or "all met"
    return [
        candidate.name,
        f"{candidate.drop:.2f}",
        f"{candidate.latency_ms:.2f}",
        f"{candidate.size_mb:.1f}",
        budgets,
        "<-" if candidate is chosen else "",
    ]
