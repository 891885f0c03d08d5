"""The option groups: defined once, the same options (names, defaults, help) on every command that takes them, and
bad values one-line errors (exit 2) before any work."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import pytest
import typer
from test_cli import _assert_one_line_error, invoke
from typer.main import get_command
from typer.testing import CliRunner

from edgec.cli.build_options import MobileShape, TensorRTOverrides
from edgec.cli.common import command, spread_groups
from edgec.cli.main import app
from edgec.errors import ConfigError

COMMANDS = get_command(app).commands
DATA_OPTIONS = {"--calib", "--eval", "--data", "--distill"}
COLUMN_OPTIONS = {"--text-column", "--text-pair-column", "--label-column", "--score-column"}
LOADING_OPTIONS = {"--trust-remote-code", "--allow-pickle"}


def _options(name: str) -> dict[str, object]:
    """A command's options by their first name, as click parsed them."""
    return {p.opts[0]: p for p in COMMANDS[name].params}


def _readers() -> list[str]:
    return sorted(name for name in COMMANDS if DATA_OPTIONS & set(_options(name)))


def test_every_command_that_reads_data_takes_the_same_column_options():
    readers = _readers()
    assert {"build", "search", "prune", "sweep", "finetune", "parity", "verify", "engine"} <= set(readers)
    for option in COLUMN_OPTIONS:
        shown = {(_options(name)[option].help, _options(name)[option].default) for name in readers}
        assert len(shown) == 1, f"{option} differs between commands: {shown}"


def test_every_command_that_loads_a_source_model_takes_the_same_loading_options():
    loaders = [name for name in COMMANDS if "model" in _options(name)]
    assert sorted(loaders) == ["build", "finetune", "prune", "search", "sweep"]
    for option in LOADING_OPTIONS | {"--force"}:
        assert len({_options(name)[option].help for name in loaders}) == 1, option
        assert all(_options(name)[option].default is False for name in loaders), f"{option} is off unless asked for"


def test_search_takes_every_build_option_but_the_target_overrides():
    build_only = {
        "--max-batch",
        "--max-seq-len",
        "--require-engine",
        "--accelerator",
        "--fixed-shape",
        "--instruction-set",
    }
    assert set(_options("search")) == set(_options("build")) - build_only


def test_parity_checks_take_the_same_threshold_overrides():
    for option in ("--max-drop", "--min-cosine", "--min-agreement"):
        assert len({_options(name)[option].help for name in ("build", "search", "parity", "verify")}) == 1


@dataclass(frozen=True, kw_only=True)
class _Inner:
    depth: Annotated[int, typer.Option(help="A nested group's option.")] = 1

    def __post_init__(self) -> None:
        if self.depth < 0:
            raise ConfigError(f"--depth must be >= 0, got {self.depth}")


@dataclass(frozen=True, kw_only=True)
class _Outer:
    name: Annotated[str, typer.Option(help="A required option.")]
    inner: _Inner = field(default_factory=_Inner)


def test_a_group_is_spread_into_options_and_built_again_for_the_command():
    seen = []
    toy = typer.Typer()
    command(toy, "other", lambda: None)  # with one command typer would make it the whole app

    def go(outer: _Outer, loud: Annotated[bool, typer.Option(help="A plain option.")] = False) -> None:
        seen.append((outer, loud))

    command(toy, "outer", go)
    runner = CliRunner()
    assert runner.invoke(toy, ["outer", "--name", "x", "--depth", "3", "--loud"]).exit_code == 0
    assert seen == [(_Outer(name="x", inner=_Inner(depth=3)), True)]
    assert runner.invoke(toy, ["outer"]).exit_code == 2, "a group's option without a default is required"
    bad = runner.invoke(toy, ["outer", "--name", "x", "--depth", "-1"])
    assert bad.exit_code == 2 and bad.stderr.strip() == "edgec: error: --depth must be >= 0, got -1"


def test_groups_that_repeat_an_option_are_refused_when_the_command_is_defined():
    def clash(outer: _Outer, name: str = "") -> None: ...

    with pytest.raises(TypeError, match="repeats an option: \\['name'\\]"):
        spread_groups(clash)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--target", "trt-fp16", "--max-batch", "0"], "--max-batch must be at least 1, got 0"),
        (["--target", "trt-fp16", "--max-seq-len", "4"], "--max-seq-len must be at least 8 tokens, got 4"),
        (
            ["--target", "mobile", "--accelerator", "coreml", "--fixed-shape", "1by128"],
            "--fixed-shape takes BATCHxSEQUENCE",
        ),
        (["--target", "mobile", "--fixed-shape", "1x128"], "pass --accelerator coreml, nnapi or xnnpack"),
    ],
)
def test_bad_target_overrides_are_one_line_errors_before_any_work(tiny_models, tmp_path, extra, needle):
    # The model folder does not exist: the override is refused before the model is even looked at.
    _assert_one_line_error(invoke("build", tmp_path / "no-model", "--out", tmp_path / "o", *extra), needle)
    assert not (tmp_path / "o").exists()


def test_target_overrides_are_typed_and_pass_only_what_was_set():
    assert TensorRTOverrides().changes() == {} and MobileShape().changes() == {}
    assert TensorRTOverrides(max_seq_len=64, require_engine=True).changes() == {
        "max_seq_len": 64,
        "require_engine": True,
    }
    assert MobileShape(accelerator="nnapi", fixed_shape="2X64").changes() == {
        "accelerator": "nnapi",
        "fixed_batch": 2,
        "fixed_seq": 64,
    }
    with pytest.raises(ConfigError, match="--max-batch"):
        TensorRTOverrides(max_batch=-3)
