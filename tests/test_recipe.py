import dataclasses

import pytest

from edgec.errors import ConfigError
from edgec.recipe import (
    DistillConfig,
    ParityThresholds,
    PruneConfig,
    QuantConfig,
    Recipe,
    TrainConfig,
    TuningConfig,
)


def test_recipe_round_trips_through_dict():
    recipe = Recipe(
        task="sequence-classification",
        quant=QuantConfig(precision="int8", calibration="entropy"),
        parity=ParityThresholds(max_drop=0.5),
        prune=PruneConfig(
            fraction=0.4,
            units=("heads", "layers"),
            tuning=TuningConfig(target="unpruned", space="post-norm", fit="scales"),
        ),
    )
    assert Recipe.from_dict(recipe.to_dict()) == recipe


@pytest.mark.parametrize(
    "make",
    [
        lambda: QuantConfig(precision="int4"),
        lambda: QuantConfig(calibration="mse"),
        lambda: QuantConfig(percentile=50),
        lambda: QuantConfig(calib_samples=0),
        lambda: ParityThresholds(min_cosine=1.5),
        lambda: ParityThresholds(max_drop=-1),
        lambda: Recipe(task="translation"),
        lambda: Recipe(opset=11),
        lambda: PruneConfig(fraction=0.5, calib_samples=0),
        lambda: PruneConfig(fraction=0.5, units=("neurons",)),
        lambda: PruneConfig(fraction=0.5, max_layers=6),  # layers are not among the units
        lambda: PruneConfig(fraction=0.5, units=("heads", "layers"), max_layers=0),
        lambda: TuningConfig(target="teacher"),
        lambda: TuningConfig(ridge="lsmr"),
        lambda: TuningConfig(space="logits"),
        lambda: TuningConfig(space="post-norm", fit="scales", fit_bias=True),
        lambda: TuningConfig(space="post-norm"),  # weights are refitted in pre-norm space only
        lambda: TuningConfig(fit="gradients"),
        lambda: TuningConfig(weight_damping=0.0),
    ],
)
def test_invalid_configs_raise_config_error(make):
    with pytest.raises(ConfigError):
        make()


def test_unknown_keys_are_errors():
    with pytest.raises(ConfigError, match="unknown key"):
        Recipe.from_dict({"quant": {"precison": "int8"}})


def test_overrides_replace_only_given_fields():
    base = ParityThresholds(min_cosine=0.99, max_drop=1.0)
    merged = base.overridden_by(ParityThresholds(max_drop=0.2))
    assert merged == ParityThresholds(min_cosine=0.99, max_drop=0.2)


def test_distill_config_takes_its_training_settings_from_train_config_alone():
    """DistillConfig is the training loop's TrainConfig plus distillation's own settings: it declares none of the
    loop's settings again, takes every one of them (accumulation and the schedule too) and validates them there."""
    assert issubclass(DistillConfig, TrainConfig)
    own = {
        "hidden_weight",
        "temperature",
        "hidden_layers",
        "label_weight",
        "teacher_cache",
        "cache_mb",
        "cache_share",
        "train_word_embeddings",
    }
    assert set(DistillConfig.__annotations__) == own, "a training setting declared again in DistillConfig"
    shared = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert {f.name: f.default for f in dataclasses.fields(DistillConfig) if f.name not in own} == shared
    config = DistillConfig(steps=7, accumulation=2, schedule="cosine", hidden_weight=0.5)
    assert (config.steps, config.accumulation, config.schedule, config.hidden_weight) == (7, 2, "cosine", 0.5)
    with pytest.raises(ConfigError, match="learning_rate must be in"):
        DistillConfig(learning_rate=2.0)


def test_a_recipe_distill_table_of_an_older_edgec_still_reads():
    """Written before DistillConfig took accumulation and the schedule: its flat keys read as they did."""
    older = {
        "steps": 5,
        "minutes": None,
        "batch_size": 8,
        "learning_rate": 1e-4,
        "weight_decay": 0.01,
        "warmup": 0.06,
        "max_length": 64,
        "hidden_weight": 1.0,
        "temperature": 2.0,
        "eval_every": 100,
        "patience": 5,
        "max_grad_norm": 1.0,
        "precision": "fp32",
        "hidden_layers": 4,
        "label_weight": 0.5,
        "teacher_cache": True,
        "cache_mb": 2048.0,
    }
    recipe = Recipe.from_dict({"distill": older})
    assert recipe.distill == DistillConfig(steps=5, batch_size=8, max_length=64, precision="fp32")
    assert Recipe.from_dict(recipe.to_dict()) == recipe
