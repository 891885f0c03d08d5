"""SIGINT and SIGTERM during a command: unwind it like an error so every cleanup runs, and never place an output
after one arrived.

A signal handler raises where the program happens to be. That raise can be lost: a signal handled while Python runs
a weakref callback or a `__del__` (the import system's module-lock callbacks, for one) is printed as "Exception
ignored" and the program goes on. So the handler also records the signal, and `raise_if_interrupted` (called by
`artifact.staged_output` before it moves anything to --out) raises it again.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

from edgec.errors import Interrupted

_received: list[int] = []


def _on_signal(signum: int, frame) -> None:
    _received.append(signum)
    raise Interrupted(signum)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """SIGTERM, and SIGINT unless the process inherited it ignored (a background job of a non-interactive shell),
    raise `Interrupted` for the duration of the block."""
    _received.clear()
    wanted = [signal.SIGTERM] + ([signal.SIGINT] if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN else [])
    previous = {signum: signal.signal(signum, _on_signal) for signum in wanted}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def raise_if_interrupted() -> None:
    """Raise `Interrupted` if a signal arrived during this command, even one whose first raise was lost."""
    if _received:
        raise Interrupted(_received[0])
