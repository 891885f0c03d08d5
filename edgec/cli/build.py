"""edgec build MODEL --target T --precision P --calib FILE --eval FILE --out DIR"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgec.api import build as build_artifact
from edgec.cli.build_options import BuildOptions, MobileShape, SearchBudgets, TensorRTOverrides
from edgec.cli.common import command, print_summary, stage_progress
from edgec.cli.options import ModelFolder
from edgec.cli.search import run_search
from edgec.errors import ConfigError, ParityError


def register(app: typer.Typer) -> None:
    command(app, "build", build)


def build(
    model: ModelFolder,
    out: Annotated[Path, typer.Option("--out", "-o", help="Artifact folder to write.")],
    options: BuildOptions,
    tensorrt: TensorRTOverrides,
    mobile: MobileShape,
    search: SearchBudgets,
    instruction_set: Annotated[
        str | None,
        typer.Option(
            help="CPU instruction set the artifact is for (avx2, avx512-vnni, amx, arm-dotprod ...); "
            "default: this machine's.",
        ),
    ] = None,
) -> None:
    """Compile a model for a target and verify it against the uncompressed model.

    With --max-latency-ms or --max-size-mb it runs `edgec search` instead (the same options, kept so that command
    lines written before `edgec search` existed still work).
    """
    if search.requested:
        return run_search(model, out, options, search)
    recipe = options.recipe()
    calib, eval_set, train = options.data()
    if search.ray.use_ray or search.ray.ray_address:
        raise ConfigError(
            "--ray runs the budgeted search's candidates; pass --max-latency-ms or --max-size-mb, "
            "or use `edgec sweep --ray`"
        )
    with stage_progress() as on_stage:
        try:
            build_artifact(
                model,
                options.target,
                recipe=recipe,
                calib=calib,
                eval=eval_set,
                train=train,
                out=out,
                force=options.force,
                load=options.loading.options,
                tensorrt=tensorrt.changes(),
                instruction_set=instruction_set,
                mobile=mobile.changes(),
                on_stage=on_stage,
            )
        except ParityError:
            rejected = out.with_name(out.name + ".rejected")
            if (rejected / "edgec.json").exists():
                print_summary(rejected)
            raise
    print_summary(out)
