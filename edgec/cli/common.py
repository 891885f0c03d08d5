"""What every command shares: the error boundary, data options and rich output."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from edgec.data import Dataset, columns_from_options, read_dataset
from edgec import interrupts
from edgec.errors import ConfigError, EdgecError, Interrupted
from edgec.processes import describe
from edgec.progress import display, stage_spinners
from edgec.recipe import DistillConfig, PruneConfig

console = Console(stderr=True)
stdout = Console()
F = TypeVar("F", bound=Callable)


def errors_to_exit_codes(command: F) -> F:
    """EdgecError -> one line on stderr and its exit code (2 bad input, 1 parity). Others keep their traceback.

    Ctrl-C and SIGTERM unwind the command like an error, so every output is cleaned up (staged_output leaves nothing
    at --out), then exit 130 and 143 as shells expect.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            with interrupts.handled():
                return command(*args, **kwargs)
        except EdgecError as exc:
            if not getattr(exc, "quiet", False):  # a run of several processes: the failing one's line is the message
                print(f"edgec: error: {describe()}{exc}", file=sys.stderr)
            raise typer.Exit(exc.exit_code) from None
        except (KeyboardInterrupt, Interrupted) as exc:
            print("edgec: interrupted; nothing was left at the output", file=sys.stderr)
            raise typer.Exit(exc.exit_code if isinstance(exc, Interrupted) else 130) from None

    return wrapper


TextColumn = Annotated[str | None, typer.Option("--text-column", help="CSV/TSV column holding the text (default: text).")]
TextPairColumn = Annotated[str | None, typer.Option("--text-pair-column", help="CSV/TSV column holding the second text.")]
LabelColumn = Annotated[str | None, typer.Option("--label-column", help="CSV/TSV column holding the class label.")]
Force = Annotated[bool, typer.Option(help="Replace --out if it exists.")]
TrustRemoteCode = Annotated[bool, typer.Option(help="Allow the model folder's own Python code.")]
AllowPickle = Annotated[bool, typer.Option(help="Allow pickle (.bin) weights, which can run code.")]
UseRay = Annotated[bool, typer.Option("--ray", help="Build every candidate as a Ray task (pip install 'edgec[ray]').")]
RayAddress = Annotated[str | None, typer.Option(
    help="With --ray: a running cluster (ray://HEAD:10001, or auto); default: a local Ray on this machine's cores.",
)]
ScoreColumn = Annotated[str | None, typer.Option("--score-column", help="CSV/TSV column holding a similarity score.")]


def read_optional(
    path: Path | None, text: str | None, pair: str | None, label: str | None, score: str | None, *, sample: int | None = None,
) -> Dataset | None:
    """The data file an option names (or a deterministic sample of it, read in one streaming pass), or None."""
    return None if path is None else read_dataset(path, columns_from_options(text, pair, label, score), sample=sample)


def numbers(text: str, option: str) -> list[float]:
    """A comma-separated list of numbers from an option."""
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"{option} takes comma-separated numbers, e.g. 0,0.3,0.5; got {text!r}") from None


def table(title: str, header: list[str], rows: list[list[str]]) -> Table:
    result = Table(title=title, title_justify="left")
    for name in header:
        result.add_column(name)
    for row in rows:
        result.add_row(*row)
    return result


Prune = Annotated[float | None, typer.Option("--prune", help="Share of the encoder's compute (MACs) to remove, e.g. 0.5.")]
PruneUnits = Annotated[str, typer.Option("--prune-units", help="What may be removed, comma-separated: heads, ffn, layers, hidden.")]
PruneHiddenSize = Annotated[int | None, typer.Option(
    "--prune-hidden-size", help="With hidden in --prune-units: the width to keep (default: from the kept share).")]
PruneRescale = Annotated[bool, typer.Option(help="Least-squares rescaling of the kept units, layer by layer.")]
PruneSchedule = Annotated[str, typer.Option(
    "--schedule", help="one-shot (prune, then distill) or iterative (prune in steps, distilling after each, "
    "within --distill-minutes).")]
Distill = Annotated[Path | None, typer.Option("--distill", help="Training text for distillation from the unpruned model.")]
DistillSteps = Annotated[int, typer.Option(help="Most distillation steps.")]
DistillMinutes = Annotated[float | None, typer.Option(help="Distillation time budget in minutes.")]
DistillBatchSize = Annotated[int, typer.Option(help="Texts per distillation step.")]
DistillLr = Annotated[float, typer.Option("--distill-lr", help="Peak learning rate of distillation.")]


def front_end(
    prune: float | None, units: str, hidden_size: int | None, rescale: bool, schedule: str, distill: Path | None,
    steps: int, minutes: float | None, batch_size: int, lr: float, *, prune_samples: int | None = None,
) -> tuple[PruneConfig | None, DistillConfig | None]:
    """The prune and distill configs the command-line options ask for (None where not asked); `prune_samples`
    changes pruning's calibration count from its default."""
    if prune is not None and prune <= 0:
        # PruneConfig takes 0 (the identity, for sweeps); typed on a command line it is a mistake.
        raise ConfigError(f"--prune must be in (0, 1), the share of compute to remove, got {prune}; omit --prune to keep the model whole")
    samples = {} if prune_samples is None else {"calib_samples": prune_samples}
    unit_names = tuple(u.strip() for u in units.split(",") if u.strip())
    prune_config = None if prune is None else PruneConfig(fraction=prune, units=unit_names, hidden_size=hidden_size,
                                                          rescale=rescale, schedule=schedule, **samples)
    distill_config = None if distill is None else DistillConfig(steps=steps, minutes=minutes, batch_size=batch_size, learning_rate=lr)
    return prune_config, distill_config


@contextmanager
def stage_progress() -> Iterator[Callable[[str], None]]:
    """A transient spinner per pipeline stage on stderr, with the bars of the long loops inside each stage, in a
    terminal only (edgec.progress); yields the on_stage callback."""
    with display(console) as progress:
        yield stage_spinners(progress)


def ray_cluster(use_ray: bool, address: str | None):
    """The RayCluster of --ray / --ray-address, or None to build in this process."""
    if address and not use_ray:
        raise ConfigError("--ray-address needs --ray")
    if not use_ray:
        return None
    from edgec.ray_sweep import RayCluster

    return RayCluster(address=address)
