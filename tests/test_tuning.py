"""Session tuning: one knob at a time, a value kept only when it is clearly faster."""

import pytest

from edgec.running.tuning import Trial, choose, knob_values, tune_session
from edgec.targets import SessionSettings


def test_a_knob_moves_only_for_a_clear_gain():
    trials = [Trial("allow_spinning", True, [10.0, 10.2]), Trial("allow_spinning", False, [9.9, 9.8])]
    assert choose(trials, current=True) is True  # 2% faster: noise on a shared machine
    trials[1] = Trial("allow_spinning", False, [9.0, 9.1])
    assert choose(trials, current=True) is False


def test_a_disturbed_round_does_not_decide():
    # Spinning's second round ran while the VM was slow (a 1.5x mode); its fastest round is what it costs.
    trials = [Trial("allow_spinning", True, [10.0, 15.0, 15.2]), Trial("allow_spinning", False, [12.0, 12.1, 12.2])]
    assert choose(trials, current=True) is True


def test_coordinate_descent_finds_the_fast_settings_and_measures_interleaved():
    calls = []

    def measure(settings: SessionSettings) -> float:
        calls.append(settings)
        ms = 10.0 / settings.intra_op_threads  # more threads help
        ms *= 0.8 if settings.execution_order == "priority_based" else 1.0
        return ms * (1.2 if not settings.allow_spinning else 1.0)

    chosen, trials = tune_session(measure, SessionSettings(intra_op_threads=1), cores=4, rounds=2)
    assert chosen.intra_op_threads == 4 and chosen.execution_order == "priority_based" and chosen.allow_spinning
    assert (
        chosen.graph_optimization_level == "all" and chosen.cpu_mem_arena and chosen.mem_pattern
    )  # no gain: unchanged
    values = knob_values(4)
    moved = 2  # threads and execution order, each confirmed head to head in 2 more rounds of 2 values
    assert len(calls) == 2 * sum(len(v) for v in values.values()) + moved * 2 * 2
    first_knob = [c.intra_op_threads for c in calls[:8]]
    assert first_knob == [1, 2, 3, 4, 1, 2, 3, 4], "rounds interleave the values"
    assert {t.knob for t in trials} == set(values)


def test_a_move_must_survive_a_head_to_head():
    # The current value's first rounds land in the VM's slow mode (2x); the head-to-head rounds show it is faster.
    spinning_calls = iter(range(1000))

    def measure(settings: SessionSettings) -> float:
        if not settings.allow_spinning:
            return 15.0
        return 20.0 if next(spinning_calls) < 4 else 10.0  # 2 calls while threads are tuned, 2 in spinning's rounds

    chosen, trials = tune_session(measure, SessionSettings(intra_op_threads=1), cores=1, rounds=2)
    assert chosen.allow_spinning, "15 ms beat the slow rounds' 20, not the current value's own 10"
    spinning = {t.value: t.p50_ms for t in trials if t.knob == "allow_spinning"}
    assert spinning == {True: [20.0, 20.0, 10.0, 10.0], False: [15.0, 15.0, 15.0, 15.0]}


def test_threads_zero_means_every_core():
    chosen, _ = tune_session(lambda s: 1.0, SessionSettings(intra_op_threads=0), cores=3, rounds=1)
    assert chosen.intra_op_threads == 3


@pytest.mark.parametrize("knob", ["execution_order", "graph_optimization_level"])
def test_every_tried_value_is_a_valid_setting(knob):
    for value in knob_values(2)[knob]:
        SessionSettings(**{knob: value})
