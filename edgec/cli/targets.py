"""edgec targets: the shipped profiles and what each needs."""

from __future__ import annotations

import importlib.util
from typing import Annotated

import typer

from edgec.backends import get_backend
from edgec.cli.common import command, stdout, table
from edgec.targets import available_targets, host_target, load_target


def register(app: typer.Typer) -> None:
    command(app, "targets", targets)


def targets(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show parity thresholds.")] = False,
) -> None:
    """List target profiles: back end, precisions, default, and what each needs."""
    rows = []
    for name in available_targets():
        profile = load_target(name)
        backend = get_backend(profile.backend)
        package, module = backend.needs, backend.needs_module
        present = "installed" if importlib.util.find_spec(module) else f"missing: pip install {package}"
        row = [
            name + (" (= ort here)" if name == host_target() else ""),
            profile.description,
            profile.backend,
            ", ".join(profile.precisions),
            profile.default_precision,
            f"{package} ({present})",
        ]
        if verbose:
            row.append(
                "; ".join(
                    f"{p}: " + ", ".join(f"{k}={v}" for k, v in vars(t).items() if v is not None)
                    for p, t in profile.parity.items()
                )
            )
        rows.append(row)
    header = ["target", "description", "backend", "precisions", "default", "needs"] + (
        ["parity thresholds"] if verbose else []
    )
    stdout.print(table("edgec targets", header, rows))
    stdout.print("aliases: ort = this CPU's profile; trt = trt-int8 when --calib is given, else trt-fp16")
