"""What every command shares: the error boundary, data options and rich output."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from edgec.data import Dataset, columns_from_options, read_dataset
from edgec.errors import EdgecError

console = Console(stderr=True)
stdout = Console()
F = TypeVar("F", bound=Callable)


def errors_to_exit_codes(command: F) -> F:
    """EdgecError -> one line on stderr and its exit code (2 bad input, 1 parity). Others keep their traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except EdgecError as exc:
            print(f"edgec: error: {exc}", file=sys.stderr)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


TextColumn = Annotated[str | None, typer.Option("--text-column", help="CSV/TSV column holding the text (default: text).")]
TextPairColumn = Annotated[str | None, typer.Option("--text-pair-column", help="CSV/TSV column holding the second text.")]
LabelColumn = Annotated[str | None, typer.Option("--label-column", help="CSV/TSV column holding the class label.")]
ScoreColumn = Annotated[str | None, typer.Option("--score-column", help="CSV/TSV column holding a similarity score.")]


def read_optional(path: Path | None, text: str | None, pair: str | None, label: str | None, score: str | None) -> Dataset | None:
    return None if path is None else read_dataset(path, columns_from_options(text, pair, label, score))


def table(title: str, header: list[str], rows: list[list[str]]) -> Table:
    result = Table(title=title, title_justify="left")
    for name in header:
        result.add_column(name)
    for row in rows:
        result.add_row(*row)
    return result
