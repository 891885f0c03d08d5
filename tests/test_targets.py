import pytest

from edgec.errors import ConfigError
from edgec.recipe import ParityThresholds
from edgec.targets import available_targets, host_target, load_target


def test_shipped_profiles_load():
    names = available_targets()
    assert {"ort-x86", "ort-arm64"} <= set(names)
    for name in names:
        profile = load_target(name)
        assert profile.default_precision in profile.precisions
        assert set(profile.parity) <= set(profile.precisions)


def test_ort_means_the_host_profile():
    assert load_target("ort").name == host_target()


def test_arm_profile_uses_signed_activations():
    assert load_target("ort-arm64").quantization.activation_type == "int8"
    assert load_target("ort-x86").quantization.activation_type == "uint8"


def test_unknown_target_names_the_choices():
    with pytest.raises(ConfigError, match="ort-x86"):
        load_target("tpu-v9")


def test_user_profile_by_path_and_unknown_keys(tmp_path):
    good = tmp_path / "mine.toml"
    good.write_text(
        'name = "mine"\ndescription = "d"\nbackend = "ort"\ndefault_precision = "fp32"\nprecisions = ["fp32"]\n'
        "[parity.fp32]\nmin_cosine = 0.9\n"
    )
    profile = load_target(str(good))
    assert profile.thresholds("fp32", ParityThresholds(max_drop=2.0)) == ParityThresholds(min_cosine=0.9, max_drop=2.0)
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text() + "[session]\nthreads = 4\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_target(str(bad))
    broken = tmp_path / "broken.toml"
    broken.write_text("name = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_target(str(broken))


def test_profile_round_trips():
    from edgec.targets import TargetProfile

    profile = load_target("ort-x86")
    assert TargetProfile.from_dict(profile.to_dict()) == profile
