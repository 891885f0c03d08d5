"""The machine edgec runs on: CPU name and the instruction set ONNX Runtime's int8 kernels will use."""

from __future__ import annotations

import platform
from pathlib import Path

# x86 instruction sets with their own int8 GEMM kernels in ONNX Runtime (MLAS), fastest last:
# avx2 multiplies u8 x s8 with VPMADDUBSW (16-bit sums that can saturate); avx2_vnni / avx512_vnni use the
# VNNI dot products (32-bit sums, no saturation); amx uses AMX tiles.
X86_INSTRUCTION_SETS = ("default", "avx2", "avx2_vnni", "avx512", "avx512_vnni", "amx")
ARM_INSTRUCTION_SETS = ("arm64", "arm64_dotprod", "arm64_i8mm")
INSTRUCTION_SETS = X86_INSTRUCTION_SETS + ARM_INSTRUCTION_SETS


def classify(machine: str, flags: set[str], torch_capability: str = "") -> str:
    """The instruction set name for a machine (`platform.machine()`), its /proc/cpuinfo flags and torch's capability.

    The flags decide where they are known; torch's capability (DEFAULT, AVX2, AVX512, ...) stands in where
    /proc/cpuinfo is absent, and cannot tell VNNI or AMX apart.
    """
    if machine.lower() in ("aarch64", "arm64"):
        return "arm64_i8mm" if "i8mm" in flags else "arm64_dotprod" if "asimddp" in flags else "arm64"
    if flags:
        if "amx_int8" in flags:
            return "amx"
        if "avx512_vnni" in flags:
            return "avx512_vnni"
        if "avx512bw" in flags:
            return "avx512"
        if "avx2" in flags:
            return "avx2_vnni" if "avx_vnni" in flags else "avx2"
        return "default"
    capability = torch_capability.upper()
    return "avx512" if capability.startswith("AVX512") else "avx2" if capability == "AVX2" else "default"


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (x86 `flags`, ARM `Features`); empty where there is no such file."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return set()
    found = next((line.split(":", 1)[1] for line in lines if line.split(":", 1)[0].strip() in ("flags", "Features")), "")
    return set(found.split())


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.processor() or "unknown CPU")


def torch_capability() -> str:
    import torch

    return torch.backends.cpu.get_cpu_capability()


def instruction_set() -> str:
    """The host's instruction set, one of INSTRUCTION_SETS."""
    return classify(platform.machine(), cpu_flags(), torch_capability())


def describe() -> dict[str, str]:
    """What the manifest and the benchmarks record about the host."""
    return {"cpu": cpu_name(), "machine": platform.machine(), "instruction_set": instruction_set(),
            "torch_capability": torch_capability()}
