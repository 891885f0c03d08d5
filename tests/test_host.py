"""Which instruction set the host has, and what a build chooses for it (the host is faked: this CI machine is one set)."""

import pytest

import edgec
from edgec import build_outputs, hardware, plan
from edgec.errors import ConfigError
from edgec.hardware import HostCPU
from edgec.targets import load_target


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("avx2",), "avx2"),  # AMD Zen 3
        (("avx2", "avx_vnni"), "avx-vnni"),  # Alder Lake P-cores without AVX-512
        (("avx2", "avx512f", "avx512bw"), "avx512"),  # Skylake-SP: VPMADDUBSW, no VNNI
        (("avx2", "avx512_bf16", "avx512_vnni", "avx512bw", "avx512f"), "avx512-vnni"),  # Zen 4
        (("amx_int8", "amx_tile", "avx2", "avx512_vnni", "avx512bw"), "amx"),  # Sapphire Rapids
    ],
)
def test_every_x86_int8_kernel_family_has_its_set(flags, expected):
    assert HostCPU("x86_64", "", flags, 2).instruction_set == expected
    assert expected in hardware.X86_INSTRUCTION_SETS


def test_profile_changes_apply_per_instruction_set(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(
        'name = "mine"\ndescription = "d"\nbackend = "ort"\ndefault_precision = "int8"\nprecisions = ["int8"]\n'
        "[instruction_sets.avx2.quantization]\nreduce_range = true\n[instruction_sets.avx2.session]\nallow_spinning = false\n"
    )
    profile = load_target(str(path))
    avx2, vnni = profile.for_instruction_set("avx2"), profile.for_instruction_set("avx512-vnni")
    assert (avx2.instruction_set, vnni.instruction_set) == ("avx2", "avx512-vnni")
    assert avx2.quantization.reduce_range and not avx2.session.allow_spinning
    assert vnni.quantization == profile.quantization and vnni.session == profile.session, (
        "a set with no changes keeps the profile's"
    )
    shipped = load_target("ort-x86")
    for (
        isa
    ) in hardware.X86_INSTRUCTION_SETS:  # the shipped profile's changes, whatever they are, resolve for every x86 set
        changes = shipped.instruction_sets.get(isa, {})
        resolved = shipped.for_instruction_set(isa)
        for section in ("quantization", "session"):
            for key, value in changes.get(section, {}).items():
                assert getattr(getattr(resolved, section), key) == value


def test_unknown_instruction_sets_and_keys_are_config_errors(tmp_path):
    head = 'name = "mine"\ndescription = "d"\nbackend = "ort"\ndefault_precision = "int8"\nprecisions = ["int8"]\n'
    for section, match in (
        ("[instruction_sets.avx3.quantization]\nreduce_range = true\n", "unknown instruction set"),
        ("[instruction_sets.avx2.quantization]\nreduce = true\n", "unknown key"),
        ("[instruction_sets.avx2.parity]\nmin_cosine = 0.5\n", "may change quantization and session"),
    ):
        path = tmp_path / "mine.toml"
        path.write_text(head + section)
        with pytest.raises(ConfigError, match=match):
            load_target(str(path))


@pytest.mark.parametrize(
    ("faked", "flags"), [("avx2", ("avx2",)), ("avx512-vnni", ("avx2", "avx512_vnni", "avx512bw"))]
)
def test_a_build_takes_the_hosts_instruction_set_and_records_it(
    tiny_models, data_files, tmp_path, monkeypatch, faked, flags
):
    faked_host = lambda: HostCPU("x86_64", "a faked CPU", flags, 2)  # noqa: E731
    monkeypatch.setattr(plan, "host", faked_host)  # the profile's instruction set
    monkeypatch.setattr(build_outputs, "host", faked_host)  # the manifest's record of the build host
    artifact = edgec.build(
        tiny_models("bert"),
        "ort-x86",
        recipe=edgec.Recipe(quant=edgec.QuantConfig(precision="int8")),
        calib=edgec.read_dataset(data_files["calib"]),
        out=tmp_path / "a",
    )
    expected = load_target("ort-x86").for_instruction_set(faked)
    manifest = artifact.manifest
    assert manifest.instruction_set == faked and manifest.host["instruction_set"] == faked
    assert manifest.target.quantization == expected.quantization
    assert artifact.session == expected.session and manifest.session.chosen_by == f"target ort-x86 for {faked}"
    reduce_range = expected.quantization.reduce_range
    assert ("7-bit" in manifest.stages.quantize.weights) == reduce_range
    report = (artifact.path / "report.md").read_text()
    assert f"**instruction set / session**: {faked} (built on" in report
    assert "## Where the time goes" in report and "MatMulIntegerToFloat" in report


def test_a_build_for_another_instruction_set_says_so(tiny_models, data_files, tmp_path):
    artifact = edgec.build(
        tiny_models("bert"),
        "ort-x86",
        recipe=edgec.Recipe(quant=edgec.QuantConfig(precision="fp32")),
        calib=edgec.read_dataset(data_files["calib"]),
        out=tmp_path / "a",
        instruction_set="amx",
    )
    assert artifact.manifest.instruction_set == "amx"
    assert artifact.manifest.host["instruction_set"] == hardware.host().instruction_set
