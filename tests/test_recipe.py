import pytest

from edgec.errors import ConfigError
from edgec.recipe import ParityThresholds, PruneConfig, QuantConfig, Recipe, TuningConfig


def test_recipe_round_trips_through_dict():
    recipe = Recipe(
        task="sequence-classification",
        quant=QuantConfig(precision="int8", calibration="entropy"),
        parity=ParityThresholds(max_drop=0.5),
        prune=PruneConfig(
            fraction=0.4, units=("heads", "layers"), tuning=TuningConfig(target="unpruned", space="post-norm")
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
        lambda: TuningConfig(target="teacher"),
        lambda: TuningConfig(ridge="lsmr"),
        lambda: TuningConfig(space="logits"),
        lambda: TuningConfig(space="post-norm", fit_bias=True),
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
