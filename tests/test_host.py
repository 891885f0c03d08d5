"""Which instruction set the host has, and what a build chooses for it (the host is faked: this CI machine is one set)."""

import pytest

import edgec
from edgec import host
from edgec.errors import ConfigError
from edgec.targets import load_target


@pytest.mark.parametrize(("machine", "flags", "capability", "expected"), [
    ("x86_64", {"sse4_2", "avx2", "fma"}, "AVX2", "avx2"),  # AMD Zen 3
    ("x86_64", {"avx2", "avx_vnni"}, "AVX2", "avx2_vnni"),  # Alder Lake P-cores without AVX-512
    ("x86_64", {"avx2", "avx512f", "avx512bw"}, "AVX512", "avx512"),  # Skylake-SP: VPMADDUBSW, no VNNI
    ("x86_64", {"avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16"}, "AVX512", "avx512_vnni"),  # Zen 4
    ("x86_64", {"avx2", "avx512bw", "avx512_vnni", "amx_tile", "amx_int8"}, "AVX512", "amx"),  # Sapphire Rapids
    ("x86_64", {"sse4_2"}, "DEFAULT", "default"),
    ("x86_64", set(), "AVX2", "avx2"),  # no /proc/cpuinfo: torch's capability decides
    ("x86_64", set(), "AVX512", "avx512"),  # ... and cannot tell VNNI apart
    ("aarch64", {"asimd", "asimddp", "i8mm"}, "DEFAULT", "arm64_i8mm"),
    ("aarch64", {"asimd", "asimddp"}, "DEFAULT", "arm64_dotprod"),
    ("arm64", set(), "DEFAULT", "arm64"),
])
def test_instruction_set_from_flags_and_capability(machine, flags, capability, expected):
    assert host.classify(machine, flags, capability) == expected
    assert expected in host.INSTRUCTION_SETS


def test_this_host_is_described():
    described = host.describe()
    assert described["instruction_set"] in host.INSTRUCTION_SETS and described["cpu"]


def test_profile_changes_apply_per_instruction_set(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('name = "mine"\ndescription = "d"\nbackend = "ort"\ndefault_precision = "int8"\nprecisions = ["int8"]\n'
                    '[instruction_sets.avx2.quantization]\nreduce_range = true\n[instruction_sets.avx2.session]\nallow_spinning = false\n')
    profile = load_target(str(path))
    avx2, vnni = profile.for_instruction_set("avx2"), profile.for_instruction_set("avx512_vnni")
    assert (avx2.instruction_set, vnni.instruction_set) == ("avx2", "avx512_vnni")
    assert avx2.quantization.reduce_range and not avx2.session.allow_spinning
    assert vnni.quantization == profile.quantization and vnni.session == profile.session, "a set with no changes keeps the profile's"
    shipped = load_target("ort-x86")
    for isa in host.X86_INSTRUCTION_SETS:  # the shipped profile's changes, whatever they are, resolve for every x86 set
        changes = shipped.instruction_sets.get(isa, {})
        resolved = shipped.for_instruction_set(isa)
        for section in ("quantization", "session"):
            for key, value in changes.get(section, {}).items():
                assert getattr(getattr(resolved, section), key) == value


def test_unknown_instruction_sets_and_keys_are_config_errors(tmp_path):
    head = 'name = "mine"\ndescription = "d"\nbackend = "ort"\ndefault_precision = "int8"\nprecisions = ["int8"]\n'
    for section, match in (("[instruction_sets.avx3.quantization]\nreduce_range = true\n", "unknown instruction set"),
                           ("[instruction_sets.avx2.quantization]\nreduce = true\n", "unknown key"),
                           ("[instruction_sets.avx2.parity]\nmin_cosine = 0.5\n", "may change quantization and session")):
        path = tmp_path / "mine.toml"
        path.write_text(head + section)
        with pytest.raises(ConfigError, match=match):
            load_target(str(path))


@pytest.mark.parametrize("faked", ["avx2", "avx512_vnni"])
def test_a_build_takes_the_hosts_instruction_set_and_records_it(tiny_models, data_files, tmp_path, monkeypatch, faked):
    monkeypatch.setattr(host, "instruction_set", lambda: faked)
    artifact = edgec.build(tiny_models("bert"), "ort-x86", recipe=edgec.Recipe(quant=edgec.QuantConfig(precision="int8")),
                           calib=edgec.read_dataset(data_files["calib"]), out=tmp_path / "a")
    expected = load_target("ort-x86").for_instruction_set(faked)
    manifest = artifact.manifest
    assert manifest["instruction_set"] == faked and manifest["host"]["instruction_set"] == faked
    assert manifest["target"]["quantization"] == expected.to_dict()["quantization"]
    assert artifact.session == expected.session and manifest["session"]["chosen_by"] == f"target ort-x86 for {faked}"
    reduce_range = expected.quantization.reduce_range
    assert ("7-bit" in manifest["stages"]["quantize"]["weights"]) == reduce_range
    report = (artifact.path / "report.md").read_text()
    assert f"| instruction set / session | {faked} (built on" in report
    assert "## Where the time goes" in report and "MatMulIntegerToFloat" in report


def test_a_build_for_another_instruction_set_says_so(tiny_models, data_files, tmp_path):
    artifact = edgec.build(tiny_models("bert"), "ort-x86", recipe=edgec.Recipe(quant=edgec.QuantConfig(precision="fp32")),
                           calib=edgec.read_dataset(data_files["calib"]), out=tmp_path / "a", instruction_set="amx")
    assert artifact.manifest["instruction_set"] == "amx"
    assert artifact.manifest["host"]["instruction_set"] == host.instruction_set()
