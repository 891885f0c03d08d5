"""TensorRT engines: build one from an ONNX file and run one on numpy feeds.

The only module of edgec that imports tensorrt, and only inside functions, so that edgec imports and its tests run on
machines without tensorrt or an NVIDIA GPU. `engine_unavailable_reason()` says whether an engine can be built here.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgec.errors import BackendUnavailable, ConfigError, EdgecError, InputError

_log = logging.getLogger("edgec")
INSTALL_HINT = "run `pip install edgec[trt]` on a machine with an NVIDIA GPU, then `edgec engine ARTIFACT`"
_MAX_REPORTED_ERRORS = 3


def _cuda_driver():
    """The CUDA driver library, initialised; None where it is missing or finds no usable device."""
    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    return driver if driver.cuInit(0) == 0 else None


def _cuda_device_count() -> int:
    """CUDA devices the driver sees (0 without a driver); asks the driver directly so that torch need not have CUDA."""
    driver = _cuda_driver()
    count = ctypes.c_int(0)
    if driver is None or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def engine_unavailable_reason() -> str | None:
    """None when an engine can be built here; else why not.

    The reason names every missing piece, joined by ' and ': 'tensorrt not installed', 'no CUDA device'.
    """
    missing = []
    if importlib.util.find_spec("tensorrt") is None:
        missing.append("tensorrt not installed")
    if _cuda_device_count() == 0:
        missing.append("no CUDA device")
    return " and ".join(missing) or None


def _device_name() -> str:
    """Name of CUDA device 0, through torch where it has CUDA, else through the driver."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    driver, device, name = _cuda_driver(), ctypes.c_int(0), ctypes.create_string_buffer(256)
    if driver is None or driver.cuDeviceGet(ctypes.byref(device), 0) != 0:
        return "unknown"
    if driver.cuDeviceGetName(name, len(name), device) != 0:
        return "unknown"
    return name.value.decode(errors="replace")


def _atomic_write(path: Path, data) -> None:
    """Write a buffer to a temp file beside `path`, then rename it into place: never a half-written file."""
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _recording_logger(trt):
    """A tensorrt logger that passes warnings and errors to edgec's log and keeps the errors, for failure messages."""
    error_levels = (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR)

    class RecordingLogger(trt.ILogger):  # type: ignore[name-defined]  # tensorrt is imported at run time, untyped
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if severity in error_levels:
                self.errors.append(msg)
                _log.error("tensorrt: %s", msg)
            elif severity == trt.ILogger.Severity.WARNING:
                _log.warning("tensorrt: %s", msg)

    return RecordingLogger()


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _last_errors(logger) -> str:
    return _one_line(" | ".join(logger.errors[-_MAX_REPORTED_ERRORS:]) or "no error logged")


def check_tensorrt_major(version: str, majors: list[int]) -> None:
    """Refuse a TensorRT major the spec was not written for: its API may differ in ways no build error would name."""
    major = version.split(".")[0]
    if not major.isdigit() or int(major) not in majors:
        raise BackendUnavailable(
            f"TensorRT {version} is major {major}, not one this artifact's spec was written for "
            f"({', '.join(map(str, majors))}); install one of those (pip install 'tensorrt>=10,<12') "
            "or rebuild with an edgec that knows it"
        )


def strongly_typed_flags(trt) -> int:
    """create_network flags of a strongly typed network. STRONGLY_TYPED is looked up by name: TensorRT 11 deprecated
    it (every network is strongly typed) and renumbered it; where a release drops the member, 0 flags are the same."""
    member = trt.NetworkDefinitionCreationFlag.__members__.get("STRONGLY_TYPED")
    return 1 << int(member) if member is not None else 0


def _parse_onnx(trt, builder, logger, onnx_path: Path, strongly_typed: bool):
    """Parse the ONNX file into a new network; from the file, so that external weights beside it are found."""
    if not onnx_path.is_file():
        raise InputError(f"ONNX model {onnx_path} does not exist; export the artifact first")
    network = builder.create_network(strongly_typed_flags(trt) if strongly_typed else 0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        # str(ParserError) names the node (index, and name and operator on TensorRT >= 10.2) and the description.
        errors = [_one_line(parser.get_error(i)) for i in range(min(parser.num_errors, _MAX_REPORTED_ERRORS))]
        described = " | ".join(errors) or _last_errors(logger)
        raise InputError(
            f"TensorRT cannot parse {onnx_path.name}: {described}; export an opset and ops TensorRT supports"
        )
    # The parser must outlive the network: it owns the weights the network points to until the build is done.
    return network, parser


def _add_profiles(builder, config, network, profiles: list[dict], logger) -> None:
    """One optimization profile per entry: input name -> {"min", "opt", "max"} shapes."""
    inputs = {network.get_input(i).name for i in range(network.num_inputs)}
    for entry in profiles:
        profile = builder.create_optimization_profile()
        for name, shapes in entry.items():
            if name not in inputs:
                raise ConfigError(
                    f"optimization profile names input '{name}', which the model lacks; use one of {sorted(inputs)}"
                )
            try:
                profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
            except (RuntimeError, TypeError, ValueError) as exc:
                raise InputError(
                    f"TensorRT rejects the profile shapes of input '{name}' ({shapes}): {_one_line(exc)}; "
                    "fix the target's max_batch / max_seq_len"
                ) from None
        if config.add_optimization_profile(profile) < 0:
            raise InputError(
                f"TensorRT rejects the optimization profile {entry}: {_last_errors(logger)}; "
                "fix the target's max_batch / max_seq_len"
            )


def _builder_config(trt, builder, network, spec: dict, logger):
    """Builder config from the spec: workspace, optimization level, profiles. No precision flags: the network is
    strongly typed, so every layer runs in the types the ONNX gives it (TensorRT 11 removed those flags)."""
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(spec["workspace_mib"]) << 20)
    config.builder_optimization_level = int(spec["builder_optimization_level"])
    _add_profiles(builder, config, network, spec["profiles"], logger)
    return config


def _attach_timing_cache(config, cache_path: Path) -> None:
    """Start from the cache of earlier builds, if any; a cache from another TensorRT or GPU is refused, not merged."""
    data = cache_path.read_bytes() if cache_path.is_file() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        raise InputError(f"timing cache {cache_path} was made by another TensorRT or GPU; delete it and build again")


def build_engine(folder: Path, spec: dict) -> dict:
    """Build folder/spec['engine'] from folder/spec['onnx'] as the spec says; return what was built.

    spec: onnx, engine, timing_cache (file names in folder), tensorrt_majors (the TensorRT majors it was written
    for), workspace_mib, builder_optimization_level (0-5), strongly_typed, profiles (list of {input: {"min", "opt",
    "max"}}). Every TensorRT failure (parse, profile, build) is an InputError naming the node or input.
    Returns {"tensorrt", "device", "seconds", "engine_bytes", "timing_cache"}.
    """
    reason = engine_unavailable_reason()
    if reason is not None:
        raise BackendUnavailable(f"cannot build a TensorRT engine here: {reason}; {INSTALL_HINT}")
    import tensorrt as trt

    check_tensorrt_major(trt.__version__, spec["tensorrt_majors"])
    folder = Path(folder)
    started = time.perf_counter()
    logger = _recording_logger(trt)
    try:
        serialized, config = _build_serialized(trt, logger, folder, spec)
    except (RuntimeError, TypeError, ValueError) as exc:  # what tensorrt's bindings raise on input they refuse
        raise InputError(
            f"TensorRT could not build an engine from {spec['onnx']}: {_one_line(exc)} "
            f"({_last_errors(logger)}); fix the model or the target's [tensorrt] settings"
        ) from None
    _atomic_write(folder / spec["engine"], serialized)
    _atomic_write(folder / spec["timing_cache"], config.get_timing_cache().serialize())
    return {
        "tensorrt": trt.__version__,
        "device": _device_name(),
        "seconds": time.perf_counter() - started,
        "engine_bytes": serialized.nbytes,
        "timing_cache": spec["timing_cache"],
    }


def _build_serialized(trt, logger, folder: Path, spec: dict):
    """The serialized engine and the builder config it was built with (its timing cache is saved next)."""
    builder = trt.Builder(logger)
    network, _parser = _parse_onnx(trt, builder, logger, folder / spec["onnx"], bool(spec["strongly_typed"]))
    config = _builder_config(trt, builder, network, spec, logger)
    _attach_timing_cache(config, folder / spec["timing_cache"])
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise InputError(
            f"TensorRT could not build an engine from {spec['onnx']}: {_last_errors(logger)}; "
            "fix the model or the target's [tensorrt] settings"
        )
    return serialized, config


def _torch_dtypes(trt, torch, engine, names: list[str]) -> dict:
    """The torch dtype of each io tensor's buffer, as the engine declares it."""
    table = {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.BF16: torch.bfloat16,
        trt.DataType.INT8: torch.int8,
        trt.DataType.INT32: torch.int32,
        trt.DataType.INT64: torch.int64,
        trt.DataType.BOOL: torch.bool,
    }
    dtypes = {n: table.get(engine.get_tensor_dtype(n)) for n in names}
    odd = {n: str(engine.get_tensor_dtype(n)) for n, dtype in dtypes.items() if dtype is None}
    if odd:
        raise InputError(f"engine io tensors {odd} have types edgec cannot feed; rebuild with float/int io")
    return dtypes


def _load_engine(trt, engine_path: Path):
    """Deserialize the engine; the logger must stay alive as long as the engine, so both are returned."""
    if not engine_path.is_file():
        raise InputError(f"TensorRT engine {engine_path} does not exist; build it with `edgec engine ARTIFACT`")
    logger = _recording_logger(trt)
    engine = trt.Runtime(logger).deserialize_cuda_engine(engine_path.read_bytes())
    if engine is None:
        raise InputError(
            f"cannot load TensorRT engine {engine_path.name}: {_last_errors(logger)}; "
            "rebuild it here with `edgec engine ARTIFACT` (engines are tied to one TensorRT and GPU)"
        )
    return engine, logger


def _max_batch(engine, inputs: list[str]) -> int:
    """The largest batch every input's profile 0 accepts."""
    return min(engine.get_tensor_profile_shape(name, 0)[2][0] for name in inputs)


def engine_forward(engine_path: Path) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Load a serialized engine; return a function that runs numpy feeds through it and returns numpy outputs by name.

    Feeds the engine lacks are ignored, integer feeds are cast to the engine's input type, and a batch larger than
    the engine's profile allows runs in chunks along axis 0.
    """
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailable(f"cannot run a TensorRT engine here: torch sees no CUDA device; {INSTALL_HINT}")
    import tensorrt as trt

    engine, logger = _load_engine(trt, Path(engine_path))
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    dtypes = _torch_dtypes(trt, torch, engine, names)
    max_batch = _max_batch(engine, inputs)
    stream = torch.cuda.Stream()

    def run_chunk(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.cuda.stream(stream):
            # A copy cast to the engine's type (int64 token ids -> int32, say), which also takes read-only arrays.
            device_inputs = {n: torch.tensor(feeds[n], dtype=dtypes[n], device="cuda") for n in inputs}
            for name, tensor in device_inputs.items():
                if not context.set_input_shape(name, tuple(tensor.shape)):
                    raise InputError(
                        f"input '{name}' has shape {tuple(tensor.shape)}, outside the engine's profile "
                        f"{engine.get_tensor_profile_shape(name, 0)}; rebuild with a wider profile"
                    )
            device_outputs = {
                n: torch.empty(tuple(context.get_tensor_shape(n)), dtype=dtypes[n], device="cuda") for n in outputs
            }
            for name, tensor in {**device_inputs, **device_outputs}.items():
                context.set_tensor_address(name, tensor.data_ptr())
            if not context.execute_async_v3(stream.cuda_stream):
                raise EdgecError(
                    f"TensorRT engine {Path(engine_path).name} failed to run: {_last_errors(logger)}; "
                    "rebuild the engine on this machine"
                )
        stream.synchronize()
        return {n: t.float().cpu().numpy() for n, t in device_outputs.items()}

    def forward(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in inputs if n not in feeds]
        if missing:
            raise InputError(f"feeds lack engine inputs {missing}; pass every input of {inputs}")
        batch = len(feeds[inputs[0]])
        if batch == 0:
            raise InputError("feeds hold no rows; pass at least one example")
        chunks = [
            run_chunk({n: feeds[n][start : start + max_batch] for n in inputs}) for start in range(0, batch, max_batch)
        ]
        return {n: np.concatenate([c[n] for c in chunks], axis=0) for n in outputs}

    return forward
