"""Reading the host CPU: model, the instruction-set extensions that matter, and what they imply."""

from edgec import hardware
from edgec.hardware import HostCPU

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx fma f16c avx2 bmi2

processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx fma f16c avx2 bmi2
"""


def test_cpuinfo_gives_the_model_and_the_flags_of_the_first_cpu(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    model, flags = hardware._cpuinfo(path)
    assert model == "AMD EPYC 7B13" and {"avx2", "fma"} <= flags and "avx512f" not in flags


def test_an_unreadable_cpuinfo_gives_nothing_rather_than_failing(tmp_path):
    assert hardware._cpuinfo(tmp_path / "absent") == ("unknown", set())


def test_the_best_int8_extension_names_the_instruction_set():
    assert HostCPU("x86_64", "", ("avx2",), 2).instruction_set == "avx2"
    assert HostCPU("x86_64", "", ("avx2", "avx512_vnni", "avx512f"), 2).instruction_set == "avx512-vnni"
    assert HostCPU("x86_64", "", ("amx_int8", "avx512_vnni"), 2).instruction_set == "amx"
    assert HostCPU("aarch64", "", ("asimddp", "i8mm"), 2).instruction_set == "arm-i8mm"
    assert HostCPU("x86_64", "", (), 1).instruction_set == "baseline"


def test_native_bf16_needs_a_bf16_extension():
    assert not HostCPU("x86_64", "", ("avx2", "avx512f"), 2).native_bf16
    assert HostCPU("x86_64", "", ("avx512_bf16",), 2).native_bf16


def test_this_host_is_described_in_full():
    described = hardware.host().to_dict()
    assert described["cores"] >= 1 and described["machine"]
    assert described["instruction_set"] in (
        "amx",
        "avx512-vnni",
        "avx-vnni",
        "avx2",
        "arm-i8mm",
        "arm-dotprod",
        "baseline",
    )
