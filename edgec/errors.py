"""One error hierarchy. The CLI catches EdgecError only: one line to stderr, then exit_code."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of a library's exception message, for a one-line error of edgec's own."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]


class EdgecError(Exception):
    """Base of every error edgec raises on purpose. The message is one line: problem, then fix."""

    exit_code = 2


class ConfigError(EdgecError):
    """A recipe, target profile or option is invalid."""


class InputError(EdgecError):
    """A model folder, data file or output path cannot be used."""


class UnsupportedModelError(InputError):
    """The model's architecture or task is outside what edgec compiles."""


class BackendUnavailable(EdgecError):
    """An optional dependency or device a back end needs is missing."""


class ParityError(EdgecError):
    """The artifact's outputs drifted from the uncompressed model beyond the thresholds."""

    exit_code = 1


class BudgetError(EdgecError):
    """A budgeted search found no artifact within every budget (the closest one is saved)."""

    exit_code = 1


class PeerProcessFailed(EdgecError):
    """Under torchrun, another training process stopped; it printed the cause, so this process says nothing more."""

    exit_code = 1
    quiet = True


class Interrupted(BaseException):
    """SIGINT or SIGTERM during a command (see `edgec.interrupts`), raised where the program is so that every cleanup
    runs. A BaseException, like KeyboardInterrupt, so no `except Exception` swallows it."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.exit_code = (
            128 + signum
        )  # what shells report for a process a signal stopped: 130 for SIGINT, 143 for SIGTERM
