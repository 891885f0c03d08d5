"""Typed stage notes: each reads back from its JSON as the same object, the JSON keeps the untyped notes' keys, and
keys or stages this edgec has no type for survive a read and a write."""

from __future__ import annotations

import dataclasses

import pytest

from edgec.artifacts.stage_notes import (
    DistillNote,
    EmitNote,
    ExecuTorchEmitNote,
    ExportNote,
    FallbackNote,
    MobileEmitNote,
    OptimizeNote,
    OrtEmitNote,
    PruneNote,
    PruneStep,
    QuantizeNote,
    StageNotes,
    TensorRTEmitNote,
)

PRUNE = PruneNote(
    fraction=0.5,
    units=["heads", "ffn"],
    calibration_texts=8,
    mean_tokens=9.5,
    macs_before=1000,
    macs_after=480,
    params_before=200,
    params_after=150,
    heads_before=[4, 4],
    heads_after=[2, 3],
    ffn_before=[64, 64],
    ffn_after=[32, 16],
    hidden_before=32,
    hidden_after=32,
    layers_kept=[0, 1],
    tuning=None,
    estimated_loss={"searched": 0.1, "rearranged": 0.05},
    least_squares=[{"layer": 0, "fit": 0.9}],
    seconds={"importance": 0.5},
)
RUN = DistillNote(
    texts=40,
    steps=6,
    examples_per_second=12.5,
    best_step=4,
    best_score=0.93,
    stopped="steps",
    seconds=2.0,
    precision="fp32 (asked for)",
    ranks=[{"rank": 0, "micro_batches": 6}],
    teacher_cache={"examples": 40, "given": 40},
    layers=[[0, 1], [1, 3]],
    history=[[0, 0.5], [4, 0.93]],
)
EVERY_KIND = StageNotes(
    target="trt-fp16: no calibration data was given",
    prune=PRUNE,
    distill=dataclasses.replace(RUN, steps=3, runs=[RUN, RUN]),
    export=ExportNote(exporter="torch.onnx", opset=16, inputs=["input_ids"], accelerator="coreml", fixed_shape=[1, 64]),
    optimize=OptimizeNote(fused_ops={"MultiHeadAttention": 2}, residual_sums=4, biased_attention=0),
    quantize=QuantizeNote(method="static int8 Q/DQ", quantized_nodes=12, weights="int8 symmetric", calib_samples=8),
    fallback=FallbackNote(
        kept_in_float=["/m/MatMul"],
        quantized_nodes=11,
        against="the fp32 reference",
        tries=[1, 2],
        sensitivity={"/m/MatMul": 0.2},
    ),
    emit=TensorRTEmitNote(
        model="model.onnx", spec="trt_build.json", script="build_engine.sh", profile={"input_ids": {}}, typing=None
    ),
    engine={"status": "deferred (no tensorrt)", "file": None},
    other={"stamp": "stamped"},
)
EMITS = [
    OrtEmitNote(model="model.onnx", runner="predict.py"),
    MobileEmitNote(
        model="model.ort",
        operator_config="ops.config",
        conversion="ORT format",
        operator_counts={"MatMul": 8},
        usability={"NNAPI": "NO"},
    ),
    ExecuTorchEmitNote(
        model="model.pte",
        io_file="io.json",
        delegate="XnnpackBackend",
        delegated_partitions=1,
        quantization="none (fp32)",
        inputs={"input_ids": {"dtype": "int64"}},
        io={"inputs": [], "outputs": []},
    ),
]


def test_every_note_reads_back_from_its_json_as_the_same_typed_object():
    values = EVERY_KIND.to_json()
    assert StageNotes.from_json(values) == EVERY_KIND
    assert isinstance(StageNotes.from_json(values).distill.runs[0], DistillNote)
    for emit in EMITS:
        back = StageNotes.from_json(StageNotes(emit=emit).to_json()).emit
        assert back == emit and type(back) is type(emit)


def test_the_json_keeps_the_keys_the_untyped_notes_had():
    """Optional keys are written only where the stage set them, as the dicts did; None fields that were always
    written (prune's tuning, the ORT runner) stay as null."""
    values = StageNotes(prune=PRUNE, distill=RUN, quantize=QuantizeNote(method="fp16"), emit=OrtEmitNote(model="m"))
    written = values.to_json()
    assert "schedule" not in written["prune"] and "steps" not in written["prune"] and written["prune"]["tuning"] is None
    assert "runs" not in written["distill"]
    assert written["quantize"] == {"method": "fp16"}
    assert written["emit"] == {"backend": "ort", "model": "m", "runner": None}
    step = PruneStep(step=1, fraction=0.5, macs_after=480, seconds={})
    iterative = dataclasses.replace(PRUNE, schedule="iterative", steps=[step])
    assert iterative.to_json()["steps"] == [{"step": 1, "fraction": 0.5, "macs_after": 480, "seconds": {}}]


def test_keys_and_stages_this_edgec_has_no_type_for_survive_a_read_and_a_write():
    """A newer edgec's key stays in the note's `extra`; an unknown stage stays as its JSON value; a back end outside
    edgec reads as the core EmitNote with the rest in `extra`."""
    values = EVERY_KIND.to_json()
    values["optimize"] = {**values["optimize"], "layer_norms": 3}
    values["emit"] = {"backend": "toy", "model": "toy.onnx", "stamp": 1}
    values["newer_stage"] = {"anything": [1, 2]}
    notes = StageNotes.from_json(values)
    assert notes.optimize.extra == {"layer_norms": 3} and notes.optimize.residual_sums == 4
    assert notes.emit == EmitNote(backend="toy", model="toy.onnx", extra={"stamp": 1})
    assert notes.other["newer_stage"] == {"anything": [1, 2]}
    assert notes.to_json() == values


def test_a_note_of_the_wrong_type_for_its_stage_is_refused():
    with pytest.raises(TypeError, match="the prune stage's note must be a PruneNote, got dict"):
        StageNotes().with_note("prune", PRUNE.to_json())
    assert StageNotes().with_note("prune", PRUNE).prune is PRUNE


def test_notes_from_before_later_fields_read_with_their_defaults():
    """Artifacts of an edgec before hidden-size and layer pruning, the teacher's cache and strongly typed TensorRT."""
    old_prune = {k: v for k, v in PRUNE.to_json().items() if k not in ("hidden_before", "hidden_after", "layers_kept")}
    old_run = {k: v for k, v in RUN.to_json().items() if k not in ("teacher_cache", "ranks")}
    old_emit = {k: v for k, v in EVERY_KIND.emit.to_json().items() if k != "typing"}
    notes = StageNotes.from_json({"prune": old_prune, "distill": old_run, "emit": old_emit})
    assert notes.prune.hidden_before is None and notes.prune.layers_kept is None
    assert notes.distill.teacher_cache is None and notes.distill.ranks == []
    assert isinstance(notes.emit, TensorRTEmitNote) and notes.emit.typing is None


def test_int8_matmuls_counts_what_the_fallback_left_in_int8():
    """From the quantize stage's count and the names kept in float, which artifacts from before the fallback
    recorded its own count also carry; None where static int8 did not run."""
    assert EVERY_KIND.int8_matmuls() == (11, 12)
    old_fallback = {k: v for k, v in EVERY_KIND.fallback.to_json().items() if k != "quantized_nodes"}
    old = StageNotes.from_json({"quantize": EVERY_KIND.quantize.to_json(), "fallback": old_fallback})
    assert old.fallback.quantized_nodes is None and old.int8_matmuls() == (11, 12)
    assert StageNotes(quantize=EVERY_KIND.quantize).int8_matmuls() == (12, 12)  # --no-fallback
    assert StageNotes(quantize=QuantizeNote(method="fp16")).int8_matmuls() is None
    assert StageNotes().int8_matmuls() is None
