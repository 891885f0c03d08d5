"""edgec: compile trained Hugging Face Transformers into verified edge artifacts."""

from edgec.api import Compressed, build, compress
from edgec.artifacts.artifact import Artifact, load_artifact
from edgec.data import Columns, Dataset, Example, read_dataset
from edgec.errors import BackendUnavailable, ConfigError, EdgecError, InputError, ParityError
from edgec.recipe import DistillConfig, ParityThresholds, PruneConfig, QuantConfig, Recipe
from edgec.source import LoadOptions
from edgec.targets import TargetProfile, load_target

__version__ = "0.1.0"
__all__ = [
    "Artifact",
    "BackendUnavailable",
    "Columns",
    "Compressed",
    "ConfigError",
    "Dataset",
    "DistillConfig",
    "EdgecError",
    "Example",
    "InputError",
    "LoadOptions",
    "ParityError",
    "ParityThresholds",
    "PruneConfig",
    "QuantConfig",
    "Recipe",
    "TargetProfile",
    "build",
    "compress",
    "load_artifact",
    "load_target",
    "read_dataset",
]
