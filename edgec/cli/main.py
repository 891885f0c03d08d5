"""The `edgec` command: one file per subcommand, each registering itself on `app`."""

from __future__ import annotations

import logging
import os
import warnings

import typer

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)
logging.basicConfig(level=logging.WARNING, format="edgec: %(message)s")
logging.getLogger("torchao").setLevel(
    logging.ERROR
)  # imported by transformers/accelerate where installed (edgec[executorch])

app = typer.Typer(
    name="edgec",
    help="Compile trained Hugging Face Transformers into verified edge artifacts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

from edgec.cli import bench, build, engine, finetune, inspect, parity, prune, run, search, sweep, targets, verify  # noqa: E402

for module in (finetune, build, search, prune, sweep, engine, parity, verify, bench, inspect, run, targets):
    module.register(app)
