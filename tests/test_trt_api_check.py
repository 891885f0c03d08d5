"""scripts/trt_api_check.py: the names the engine module reads from tensorrt, and the names a binding holds.

The check itself (downloading the real wheels) runs as scripts/trt_api_check.sh, outside `make test`.
"""

import importlib.util
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("trt_api_check", ROOT / "scripts" / "trt_api_check.py")
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)

SNIPPET = """
import numpy as np

def build(path):
    import tensorrt as trt
    builder = trt.Builder(None)
    network, parser = _parse(trt, builder)
    flag = trt.NetworkDefinitionCreationFlag.__members__.get("STRONGLY_TYPED")
    config = builder.create_builder_config()
    config.set_timing_cache(None, ignore_mismatch=False)
    rows = [np.zeros(3).sum() for _ in range(network.num_inputs)]
    return path.name, len(rows), _describe(parser), _logger(trt)

def _parse(trt, builder):
    network = builder.create_network(0)
    return network, trt.OnnxParser(network, None)

def _describe(parser):
    return [parser.get_error(i) for i in range(parser.num_errors)]

def _logger(trt):
    class Logger(trt.ILogger):
        def log(self, severity, msg):
            self.seen = msg.upper()
    return Logger()
"""


def test_names_follow_tensorrt_objects_through_assignments_calls_and_returns():
    names = check.tensorrt_names(SNIPPET)
    assert names == {
        "Builder",
        "NetworkDefinitionCreationFlag",
        "STRONGLY_TYPED",
        "create_builder_config",
        "set_timing_cache",
        "ignore_mismatch",
        "num_inputs",
        "create_network",
        "OnnxParser",
        "get_error",
        "num_errors",
        "ILogger",
        "log",
    }
    # Python's own attributes (path.name, np.zeros, .sum, str.upper, self.seen) are not tensorrt names.


def test_the_engine_module_reads_no_name_tensorrt_11_removed():
    names = check.tensorrt_names(check.ENGINE_MODULE.read_text())
    assert {
        "STRONGLY_TYPED",
        "create_network",
        "set_memory_pool_limit",
        "execute_async_v3",
        "create_timing_cache",
    } <= names
    assert not names & {"BuilderFlag", "set_flag", "int8_calibrator", "OBEY_PRECISION_CONSTRAINTS"}


def test_compiled_names_include_merged_string_tails(tmp_path):
    binary = b"\x7fELF\0INTERNAL_ERROR\0get_num_errors\0Some docstring mentioning FP16 here.\0kHALF\0"
    names = check.compiled_names(binary)
    assert {"INTERNAL_ERROR", "ERROR", "num_errors", "HALF"} <= names
    assert "FP16" not in names, "a word inside a docstring is not a registered name"
    wheel = tmp_path / "tensorrt_cu13_bindings-11.4.0.106-cp311-none-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("tensorrt_bindings/tensorrt.so", binary)
    result = check.check_wheel(wheel, {"ERROR", "num_errors", "FP16", "set_flag"})
    assert result["version"] == "11.4.0.106" and result["missing"] == ["FP16", "set_flag"]
