"""One error hierarchy. The CLI catches EdgecError only: one line to stderr, then exit_code."""


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
