"""int8 on x86 CPUs without VNNI (issue 13, item 6): ONNX Runtime's AVX2 kernels, run under qemu's x86-64 emulation.

    python benchmarks/avx2_int8.py            # builds (cached), runs, writes results-avx2-int8.json and RESULTS.md
    python benchmarks/avx2_int8.py --render   # the RESULTS.md section from the committed JSON

ONNX Runtime's int8 GEMM (MLAS) picks its kernel from cpuid when it starts: AMX, AVX512-VNNI or AVX-VNNI where the CPU
has them; otherwise AVX512BW or AVX2 kernels that multiply u8 x s8 pairs with VPMADDUBSW, whose 16-bit sum of two
products saturates at 32,767 (255 x 127 x 2 = 64,770 does not fit). This machine's CPU has VNNI, so the AVX2 kernels run
here only under qemu-x86_64 user-mode emulation with a CPU model without VNNI or AVX-512 (`-cpu Haswell-v4`), which
reports that CPU through cpuid. Emulation reproduces the kernels' arithmetic exactly, not their speed: this measures
accuracy only, and no latency.

1. A probe: one MatMulInteger whose exact result needs more than 16 bits per pair of products, natively and
   emulated. It shows which kernel family ran.
2. all-MiniLM-L6-v2 int8 for ort-x86, built twice: the profile's settings (8-bit weights) and with reduce_range (7-bit
   weights, whose products always fit). Each runs natively and emulated on all of STS-B test (batches of 32, one
   thread): Spearman x100, and each sentence's cosine to the fp32 build's embedding (run natively).

qemu-x86_64-static comes from Debian's qemu-user-static package (`apt-get download qemu-user-static`, then the one
binary extracted, as scripts/setup_arm64.sh does for aarch64); set EDGEC_QEMU_X86 to use another.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import models  # noqa: E402
from run import STS, machine, write_section  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

import edgec  # noqa: E402
from edgec.artifacts.artifact import load_artifact, package_versions  # noqa: E402
from edgec.data import Dataset, read_sts_benchmark  # noqa: E402
from edgec.running import emulation_runner  # noqa: E402
from edgec.sweep import MEASURE_ONLY  # noqa: E402
from edgec.targets import load_target  # noqa: E402

WORK = HERE / "work" / "avx2_int8"
RESULTS = HERE / "results-avx2-int8.json"
SECTION, SCRIPT = "avx2-int8", "benchmarks/avx2_int8.py"
EMULATED_CPU = "Haswell-v4"  # AVX2 and FMA, no AVX-512, no VNNI: MLAS's AVX2 int8 kernels
BATCH = 32


def qemu_x86() -> Path:
    """qemu-x86_64-static: EDGEC_QEMU_X86, else extracted once from Debian's qemu-user-static into the cache."""
    if os.environ.get("EDGEC_QEMU_X86"):
        return Path(os.environ["EDGEC_QEMU_X86"])
    binary = Path.home() / ".cache" / "edgec" / "x86" / "qemu-x86_64-static"
    if binary.is_file():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(["apt-get", "download", "qemu-user-static"], cwd=folder, check=True, capture_output=True)
        (deb,) = Path(folder).glob("qemu-user-static_*.deb")
        tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True).stdout
        member = subprocess.run(
            ["tar", "-xO", "./usr/bin/qemu-x86_64-static"], input=tar, check=True, capture_output=True
        ).stdout
    partial = binary.with_suffix(".tmp")
    partial.write_bytes(member)
    partial.chmod(0o755)
    partial.rename(binary)
    return binary


def run_model(model: Path, feeds: list[dict[str, np.ndarray]], emulated: bool) -> tuple[dict[str, np.ndarray], float]:
    """The model's outputs on the feeds (edgec's standalone emulation runner, one thread), and the wall seconds."""
    with tempfile.TemporaryDirectory() as folder:
        feeds_path, out_path = Path(folder) / "feeds.npz", Path(folder) / "out.npz"
        np.savez(feeds_path, **{f"b{i}/{k}": v for i, batch in enumerate(feeds) for k, v in batch.items()})
        command = [sys.executable, emulation_runner.__file__, str(model), str(feeds_path), str(out_path), "1"]
        if emulated:
            command = [str(qemu_x86()), "-cpu", EMULATED_CPU, *command]
        started = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - started
        with np.load(out_path, allow_pickle=False) as saved:
            names = json.loads(str(saved["meta"]))["outputs"]
            return {n: [saved[f"b{i}/{n}"] for i in range(len(feeds))] for n in names}, seconds


def probe_model(folder: Path) -> Path:
    """MatMulInteger of a 1x64 u8 row of 255s by a 64x1 s8 column of 127s: exactly 2,072,640; 1,048,544 where every
    pair of products saturates at 32,767."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.full((64, 1), 127, np.int8), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [1, 1])],
        [weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "probe.onnx"
    onnx.save(model, path)
    return path


def probe(folder: Path) -> dict:
    feeds = [{"a": np.full((1, 64), 255, np.uint8)}]
    model = probe_model(folder)
    results = {"exact": 64 * 255 * 127}
    for emulated in (False, True):
        outputs, _ = run_model(model, feeds, emulated)
        results["emulated" if emulated else "native"] = int(outputs["y"][0][0, 0])
    return results


def build(model_dir: Path, name: str, precision: str, reduce_range: bool, calib: Dataset) -> Path:
    """An ort-x86 build of MiniLM (cached in benchmarks/work/avx2_int8/NAME): its model file."""
    folder = WORK / name / "artifact"
    if not (folder / "edgec.json").is_file():
        target = load_target("ort-x86")
        target = dataclasses.replace(
            target, quantization=dataclasses.replace(target.quantization, reduce_range=reduce_range)
        )
        edgec.build(
            model_dir,
            target,
            recipe=edgec.Recipe(quant=edgec.QuantConfig(precision=precision), parity=MEASURE_ONLY),
            calib=calib,
            out=folder,
            force=True,
        )
    return load_artifact(folder).model_path


def sentence_batches(model_path: Path, sentences: list[str]) -> list[dict[str, np.ndarray]]:
    """The sentences tokenized as the artifact's tokenizer does, in batches of BATCH (padded per batch)."""
    tokenizer = load_artifact(model_path.parent).tokenizer()
    batches = []
    for start in range(0, len(sentences), BATCH):
        encoded = tokenizer(
            sentences[start : start + BATCH], padding=True, truncation=True, max_length=128, return_tensors="np"
        )
        batches.append({k: v.astype(np.int64) for k, v in encoded.items()})
    return batches


def scores(embeddings: np.ndarray, test: Dataset, index: dict[str, int]) -> float:
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    cosines = [float(unit[index[e.text]] @ unit[index[e.text_pair]]) for e in test.examples]
    return float(spearmanr(cosines, [e.score for e in test.examples]).statistic) * 100


def measure() -> dict:
    model_dir = models.minilm()
    test = read_sts_benchmark(STS / "sts-test.csv")
    calib = read_sts_benchmark(STS / "sts-train.csv")
    sentences = sorted({t for e in test.examples for t in (e.text, e.text_pair)}, key=len)
    index = {s: i for i, s in enumerate(sentences)}
    WORK.mkdir(parents=True, exist_ok=True)
    record: dict = {"probe": probe(WORK), "rows": []}
    fp32 = build(model_dir, "fp32", "fp32", False, calib)
    feeds = sentence_batches(fp32, sentences)
    reference = np.concatenate(run_model(fp32, feeds, emulated=False)[0]["sentence_embedding"])
    unit_reference = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    record["fp32_spearman"] = scores(reference, test, index)
    for name, reduce_range in (("int8", False), ("int8-reduce-range", True)):
        model = build(model_dir, name, "int8", reduce_range, calib)
        for emulated in (False, True):
            outputs, seconds = run_model(model, feeds, emulated)
            embeddings = np.concatenate(outputs["sentence_embedding"])
            unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
            cosine = np.sum(unit * unit_reference, axis=1)
            record["rows"].append(
                {
                    "build": name,
                    "reduce_range": reduce_range,
                    "kernels": f"AVX2 (qemu -cpu {EMULATED_CPU})" if emulated else "native",
                    "spearman": scores(embeddings, test, index),
                    "cosine_mean": float(cosine.mean()),
                    "cosine_min": float(cosine.min()),
                    "seconds": seconds,
                }
            )
            print(record["rows"][-1], flush=True)
    return record


def markdown(record: dict) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in record["versions"].items())
    found = record["probe"]
    lines = [
        "## int8 on x86 without VNNI: ONNX Runtime's AVX2 kernels under emulation (MiniLM, STS-B test)",
        "",
        f"Machine: {record['machine']}. Versions: {versions}, {record['qemu']}. Command: `{record['command']}` "
        f"({record['wall_s'] / 60:.0f} min). The AVX2 rows run under `qemu-x86_64 -cpu {EMULATED_CPU}` (AVX2, FMA, no "
        "AVX-512, no VNNI), whose cpuid makes ONNX Runtime pick its AVX2 int8 kernels: their arithmetic exactly, not "
        "their speed, so no latency is given. Every row runs all of STS-B test (batches of 32, one thread); cosine is "
        "each sentence's embedding against the fp32 build's, run natively.",
        "",
        f"Probe (a u8 row of 255s times an s8 column of 127s, 64 long): exact {found['exact']:,}; native "
        f"{found['native']:,}; AVX2 emulated {found['emulated']:,}"
        + (" (each pair of products saturated at 32,767)." if found["emulated"] != found["exact"] else "."),
        "",
        f"fp32 build, natively: Spearman {record['fp32_spearman']:.2f}.",
        "",
        "| int8 build | weights | kernels | Spearman x100 | vs fp32 | cosine to fp32, mean | min | run s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in record["rows"]:
        lines.append(
            f"| {row['build']} | {'7-bit (reduce_range)' if row['reduce_range'] else '8-bit'} | {row['kernels']} | "
            f"{row['spearman']:.2f} | {row['spearman'] - record['fp32_spearman']:+.2f} | {row['cosine_mean']:.4f} | "
            f"{row['cosine_min']:.4f} | {row['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render", action="store_true", help="Only rewrite RESULTS.md from the committed JSON.")
    args = parser.parse_args()
    if args.render:
        write_section(HERE / "RESULTS.md", SECTION, markdown(json.loads(RESULTS.read_text())), SCRIPT)
        return
    started = time.perf_counter()
    record = measure()
    qemu_version = subprocess.run([str(qemu_x86()), "--version"], capture_output=True, text=True).stdout
    record.update(
        machine=machine(),
        versions=package_versions(),
        qemu=qemu_version.splitlines()[0].strip(),
        command=("python benchmarks/avx2_int8.py " + " ".join(sys.argv[1:])).strip(),
        wall_s=time.perf_counter() - started,
    )
    RESULTS.write_text(json.dumps(record, indent=1) + "\n")
    write_section(HERE / "RESULTS.md", SECTION, markdown(record), SCRIPT)
    print(markdown(record), flush=True)


if __name__ == "__main__":
    main()
