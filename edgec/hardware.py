"""The machine edgec runs on: CPU model, instruction-set extensions, cores. CPU-dependent defaults start here.

Machines of one kind differ (Intel with AMX, AMD Zen 4 with AVX512-VNNI/BF16, AMD Zen 3 with AVX2 only), so no
default may assume an extension: it asks `host()` and records what it found.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

# The /proc/cpuinfo flags that change which kernels are fast: int8 dot products and native bf16.
_KNOWN_FLAGS = (
    "avx2",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimddp",
    "i8mm",
    "bf16",
)

# ONNX Runtime's int8 GEMM kernels (MLAS) differ by these, best first. avx2 and avx512 multiply u8 x s8 with
# VPMADDUBSW, whose 16-bit pair sums can saturate; the VNNI sets and AMX sum in 32 bits. A target profile's
# [instruction_sets.<name>] changes apply to the set a build compiles for.
_INT8_LADDER = (
    ("amx_int8", "amx"),
    ("avx512_vnni", "avx512-vnni"),
    ("avx_vnni", "avx-vnni"),
    ("avx512bw", "avx512"),
    ("avx2", "avx2"),
    ("i8mm", "arm-i8mm"),
    ("asimddp", "arm-dotprod"),
)
_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")

# ONEDNN_MAX_CPU_ISA caps the kernels oneDNN (torch's CPU matmuls, bf16 ones included) may use. Under a cap
# below AVX512_CORE_BF16 a bf16 CPU computes bf16 like one without it: emulated, several times slower than fp32.
_ONEDNN_BF16_LEVELS = ("AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16")
X86_INSTRUCTION_SETS = ("amx", "avx512-vnni", "avx-vnni", "avx512", "avx2", "baseline")
ARM_INSTRUCTION_SETS = ("arm-i8mm", "arm-dotprod")
INSTRUCTION_SETS = X86_INSTRUCTION_SETS + ARM_INSTRUCTION_SETS


@dataclass(frozen=True)
class HostCPU:
    """What the CPU computes natively."""

    machine: str
    """platform.machine(): x86_64, aarch64 ..."""
    model: str
    """The CPU's model name (/proc/cpuinfo), or "unknown"."""
    flags: tuple[str, ...]
    """The instruction-set extensions of _KNOWN_FLAGS it has, sorted."""
    cores: int
    """Logical CPUs this process may run on."""

    @property
    def native_bf16(self) -> bool:
        """bf16 matrix arithmetic in hardware (AVX512-BF16, AMX-BF16, or Arm's BF16); elsewhere autocast emulates it."""
        return any(f in self.flags for f in _BF16_FLAGS)

    @property
    def instruction_set(self) -> str:
        """The best int8 dot-product extension, one of INSTRUCTION_SETS."""
        for flag, name in _INT8_LADDER:
            if flag in self.flags:
                return name
        return "baseline"

    def to_dict(self) -> dict:
        return {**asdict(self), "instruction_set": self.instruction_set, "native_bf16": self.native_bf16}


def torch_bf16_cap(cpu: HostCPU, onednn_max_isa: str | None) -> str | None:
    """Why torch cannot use this CPU's native bf16 although it has it (an ONEDNN_MAX_CPU_ISA below bf16), or None.

    Only oneDNN reads the cap; ONNX Runtime's int8 kernels ignore it, so `instruction_set` stays the hardware's.
    """
    cap = (onednn_max_isa or "").strip().upper()
    if cpu.machine not in ("x86_64", "AMD64") or not cpu.native_bf16 or cap in ("", "ALL", "DEFAULT"):
        return None
    return None if cap in _ONEDNN_BF16_LEVELS else f"ONEDNN_MAX_CPU_ISA={cap} keeps torch off its native bf16"


def _cpuinfo(path: Path = Path("/proc/cpuinfo")) -> tuple[str, set[str]]:
    """(model name, flags) of the first CPU listed; x86 calls them flags, Arm Features."""
    model = "unknown"
    flags: set[str] = set()
    try:
        text = path.read_text()
    except OSError:
        return model, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "model name" and model == "unknown":
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model, flags


@functools.cache
def host() -> HostCPU:
    """This machine's CPU, read once per process."""
    model, flags = _cpuinfo()
    if not flags:  # no /proc/cpuinfo (macOS, containers that hide it): ask torch's own probes
        flags = _torch_flags()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return HostCPU(platform.machine(), model, tuple(sorted(f for f in flags if f in _KNOWN_FLAGS)), cores)


def _torch_flags() -> set[str]:
    import torch

    probes = {
        "avx2": "_is_avx2_supported",
        "avx512f": "_is_avx512_supported",
        "avx512_vnni": "_is_vnni_supported",
        "avx512_bf16": "_is_avx512_bf16_supported",
        "amx_tile": "_is_amx_tile_supported",
    }
    found = {flag for flag, probe in probes.items() if getattr(torch.cpu, probe, lambda: False)()}
    found |= {"avx512bw"} if "avx512f" in found else set()  # torch's AVX512 probe asks for F, BW, VL and DQ together
    return found | ({"amx_int8", "amx_bf16"} if "amx_tile" in found else set())  # every AMX CPU has both
