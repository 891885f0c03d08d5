"""Session settings measured on this machine, one knob at a time (after Olive's session-parameter tuning)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgec.running.bench import BenchConfig, bench_onnx
from edgec.targets import SessionSettings

MIN_GAIN = 0.03
"""A knob moves off its current value only for a fastest-round p50 this much faster: smaller gains are within the noise of
a shared machine (the same model measured 8.96 and 13.55 ms in one sweep)."""


@dataclass(frozen=True)
class Trial:
    knob: str
    value: Any
    p50_ms: list[float]
    """One p50 per round (each round in a fresh process, rounds interleaved across the knob's values)."""

    @property
    def fastest_ms(self) -> float:
        """The fastest round's p50: what each value costs on the machine undisturbed. A shared VM runs one file at
        two speeds from process to process (e.g. 40 and 62 ms), and disturbance only ever slows a round, so a median
        of a few rounds picks a mode at random while the fastest round does not."""
        return min(self.p50_ms)


def knob_values(cores: int) -> dict[str, list[Any]]:
    """The values tried per knob, in the order the knobs are tuned (threads first: it moves latency the most)."""
    return {
        "intra_op_threads": list(range(1, cores + 1)),
        "allow_spinning": [True, False],
        "graph_optimization_level": ["basic", "extended", "all"],
        "execution_order": ["default", "priority_based"],
        "cpu_mem_arena": [True, False],
        "mem_pattern": [True, False],
    }


def choose(trials: list[Trial], current: Any, min_gain: float = MIN_GAIN) -> Any:
    """The fastest value of one knob (fastest round), if it beats the current value's by more than `min_gain`; else the
    current."""
    by_value = {repr(t.value): t for t in trials}
    baseline = by_value[repr(current)].fastest_ms
    fastest = min(trials, key=lambda t: t.fastest_ms)
    return fastest.value if fastest.fastest_ms < baseline * (1 - min_gain) else current


def tune_session(
    measure: Callable[[SessionSettings], float],
    base: SessionSettings,
    *,
    cores: int | None = None,
    rounds: int = 2,
) -> tuple[SessionSettings, list[Trial]]:
    """Coordinate descent over knob_values: each knob's values measured in `rounds` interleaved rounds, the
    winner kept (choose) before the next knob. A value that would replace the current one first meets it head to
    head in `rounds` more interleaved rounds and is kept only if it still wins over all of them: a shared VM's slow
    mode can cover every round of one value (mpnet pruned 0.85 measured 17.7 ms in all three rounds of one setting
    and 9.5 ms in another's). `measure` returns one p50 for settings. Threads 0 (ORT's default) counts as `cores`."""
    cores = cores or os.cpu_count() or 1
    current = base if base.intra_op_threads else dataclasses.replace(base, intra_op_threads=cores)
    trials: list[Trial] = []
    for knob, values in knob_values(cores).items():
        measured: dict[str, list[float]] = {repr(v): [] for v in values}
        _interleaved(measure, current, knob, values, rounds, measured)
        knob_trials = [Trial(knob, v, measured[repr(v)]) for v in values]
        held = getattr(current, knob)
        winner = choose(knob_trials, held)
        if repr(winner) != repr(held):
            _interleaved(measure, current, knob, [held, winner], rounds, measured)
            knob_trials = [Trial(knob, v, measured[repr(v)]) for v in values]
            winner = choose([t for t in knob_trials if repr(t.value) in (repr(held), repr(winner))], held)
        trials += knob_trials
        current = dataclasses.replace(current, **{knob: winner})
    return current, trials


def _interleaved(
    measure: Callable[[SessionSettings], float],
    current: SessionSettings,
    knob: str,
    tried: list[Any],
    rounds: int,
    measured: dict[str, list[float]],
) -> None:
    """`rounds` rounds over `tried` values of `knob` (the values alternate within a round), each p50 appended to
    `measured` under the value's repr."""
    for _ in range(rounds):
        for value in tried:
            measured[repr(value)].append(measure(dataclasses.replace(current, **{knob: value})))


def onnx_latency(model_path: str, vocab_size: int, config: BenchConfig) -> Callable[[SessionSettings], float]:
    """A `measure` for tune_session: the artifact's p50 in a fresh process, threads as the settings say."""
    untouched = dataclasses.replace(config, threads=None)
    return lambda settings: bench_onnx(model_path, vocab_size, untouched, settings).p50_ms
