"""What every command shares: registration (option groups spread, the error boundary) and rich output. The shared
options themselves are in options.py and build_options.py."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast, get_type_hints

import typer
from rich.console import Console
from rich.table import Table

from edgec import interrupts
from edgec.artifacts.report import ledger_table, summary_rows
from edgec.errors import ConfigError, EdgecError, Interrupted
from edgec.processes import describe
from edgec.progress import display, stage_spinners

console = Console(stderr=True)
stdout = Console()
F = TypeVar("F", bound=Callable)


def command(app: typer.Typer, name: str, function: Callable[..., None]) -> None:
    """Register `function` as `edgec NAME`, its option groups spread into options, EdgecError turned into exit codes."""
    app.command(name)(errors_to_exit_codes(spread_groups(function)))


def spread_groups(function: Callable[..., None]) -> Callable[..., None]:
    """`function` with each parameter typed by an option group (a dataclass of typer options) replaced by the group's
    options, a nested group's in its place; called with the options, it calls `function` with the groups built.

    Typer reads a command's options from its signature and has no parameter groups, so the signature typer sees is
    rewritten. A group's __post_init__ runs inside the error boundary: a bad value is a one-line exit 2.
    """
    signature = inspect.signature(function, eval_str=True)
    groups = {p.name: p.annotation for p in signature.parameters.values() if _is_group(p.annotation)}
    # Keyword-only, because a spread group puts options with defaults before ones without (typer passes keywords).
    parameters = [
        q
        for p in signature.parameters.values()
        for q in (_group_options(p.annotation) if p.name in groups else [p.replace(kind=p.KEYWORD_ONLY)])
    ]
    names = [p.name for p in parameters]
    if repeated := sorted({n for n in names if names.count(n) > 1}):
        raise TypeError(f"{function.__name__}: an option group repeats an option: {repeated}")

    @functools.wraps(function)
    def with_groups(**options: Any) -> None:
        built = {name: _build_group(group, options) for name, group in groups.items()}
        return function(**options, **built)

    with_groups.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    # typer resolves annotations with get_type_hints: give it the spread ones, already resolved.
    with_groups.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": signature.return_annotation}
    return with_groups


def _is_group(annotation: object) -> bool:
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


def _group_options(group: type) -> list[inspect.Parameter]:
    hints = get_type_hints(group, include_extras=True)
    options = []
    for field in dataclasses.fields(group):
        if _is_group(hints[field.name]):
            options += _group_options(hints[field.name])
        else:
            default = inspect.Parameter.empty if field.default is dataclasses.MISSING else field.default
            kind = inspect.Parameter.KEYWORD_ONLY
            options.append(inspect.Parameter(field.name, kind, annotation=hints[field.name], default=default))
    return options


def _build_group(group: type, options: dict[str, Any]) -> Any:
    """The group from the parsed options, which are taken out of `options`."""
    hints = get_type_hints(group, include_extras=True)
    return group(
        **{
            f.name: _build_group(hints[f.name], options) if _is_group(hints[f.name]) else options.pop(f.name)
            for f in dataclasses.fields(group)
        }
    )


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

    return cast(F, wrapper)


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


def print_summary(folder: Path) -> None:
    """The summary and parity ledger of the artifact a build (or a search) wrote at `folder`."""
    from edgec.artifacts.artifact import load_artifact

    manifest = load_artifact(folder).manifest
    stdout.print(table(f"edgec build: {folder}", ["", ""], [list(r) for r in summary_rows(manifest)]))
    stdout.print(table("parity ledger (vs fp32 PyTorch)", *ledger_table(manifest)))


@contextmanager
def stage_progress() -> Iterator[Callable[[str], None]]:
    """A transient spinner per pipeline stage on stderr, with the bars of the long loops inside each stage, in a
    terminal only (edgec.progress); yields the on_stage callback."""
    with display(console) as progress:
        yield stage_spinners(progress)
