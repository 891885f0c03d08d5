"""Progress bars for long loops: shown in a terminal, silent everywhere else.

A command opens one display (`display`) for its whole run; loops anywhere below it report through
`track` or `bar`, which do nothing when no display is open. So the library stays silent when called from
code, and a command stays silent when stdout is not a terminal (CI logs, pipes): only an interactive run
sees the bars. Each bar shows counts, elapsed time and an estimate of the time left, and disappears when
its loop ends.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable, Iterator, Sized
from contextvars import ContextVar
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

T = TypeVar("T")
_active: ContextVar[Progress | None] = ContextVar("edgec_progress", default=None)


def interactive(console: Console) -> bool:
    """True where bars belong: stdout is a terminal and so is the console they are drawn on."""
    return sys.stdout.isatty() and console.is_terminal


@contextlib.contextmanager
def display(console: Console) -> Iterator[Progress | None]:
    """Draw the bars of every loop run inside the block on `console`; yields the Progress, or None when silent."""
    if not interactive(console):
        yield None
        return
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(bar_width=24),
        _Counts(),
        TimeElapsedColumn(),
        _TimeLeft(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        token = _active.set(progress)
        try:
            yield progress
        finally:
            _active.reset(token)


def _counted(task) -> bool:
    """A loop's bar (counts and time left make sense), not a stage line or a loop of unknown length."""
    return task.total is not None and not task.fields.get("stage")


class _Counts(MofNCompleteColumn):
    """done/total of a loop's bar."""

    def render(self, task):
        return super().render(task) if _counted(task) else Text("")


class _TimeLeft(TimeRemainingColumn):
    """The estimated time left of a loop's bar."""

    def render(self, task):
        return Text.assemble("eta ", super().render(task)) if _counted(task) else Text("")


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate `items`, advancing a bar by one per item (total: len(items) unless given)."""
    with bar(description, total if total is not None else len(items) if isinstance(items, Sized) else None) as step:
        for item in items:
            yield item
            step()


@contextlib.contextmanager
def bar(description: str, total: int | None, *, enabled: bool = True) -> Iterator[Callable[..., None]]:
    """A bar advanced by hand: `step(n=1, status="loss 0.12")` moves it and shows a status after the estimate."""
    progress = _active.get() if enabled else None
    if progress is None:
        yield lambda n=1, status=None: None
        return
    task = progress.add_task(description, total=total, status="")
    progress.refresh()  # drawn at once: a loop shorter than the refresh interval still shows

    def step(n: int = 1, status: str | None = None) -> None:
        progress.update(task, advance=n, **({"status": status} if status is not None else {}))

    try:
        yield step
    finally:
        progress.remove_task(task)


def stage_spinners(progress: Progress | None) -> Callable[[str], None]:
    """An on_stage callback showing one spinner line per pipeline stage, the finished ones marked complete."""
    if progress is None:
        return lambda name: None
    current: list[TaskID] = []

    def on_stage(name: str) -> None:
        if current:
            progress.update(current[-1], completed=1, total=1)
        current.append(progress.add_task(name, total=None, status="", stage=True))
        progress.refresh()

    return on_stage
