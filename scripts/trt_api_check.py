"""Check edgec's TensorRT engine module against the names compiled into tensorrt's Python bindings, without a GPU.

Usage: python scripts/trt_api_check.py WHEEL... (scripts/trt_api_check.sh downloads the wheels and calls this).
Every TensorRT attribute, enum member and method that edgec/backends/tensorrt_engine.py touches is read from its
source with Python's ast; each must be among the identifiers compiled into each wheel's tensorrt.so. Exits 1 on any
missing name. Writes benchmarks/results-trt-api-check.json and its section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINE_MODULE = ROOT / "edgec" / "backends" / "tensorrt_engine.py"
# Names NVIDIA's migration guide lists as removed in TensorRT 11: present in 10.x, absent in 11.x. They show that
# the check can tell a name that exists from one that does not.
REMOVED_IN_11 = ("FP16", "OBEY_PRECISION_CONSTRAINTS", "int8_calibrator", "IInt8EntropyCalibrator2")
_IDENTIFIER = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")


def tensorrt_names(source: str) -> set[str]:
    """Attribute, method and enum-member names the source reads from tensorrt objects.

    A tensorrt object is the module imported as `import tensorrt as NAME`, anything read or called from one, and
    what a function of the same source returns from one or receives as one (propagated to a fixed point across
    the module's top-level functions; nested functions share their top-level function's names). Keyword names of
    calls into tensorrt and methods of a class derived from a tensorrt class count too. Dunder attributes
    (`__members__`) are Python's; a string looked up in an enum's `__members__` is an enum member name.
    """
    tree = ast.parse(source)
    functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    scopes = {name: _imported_tensorrt(f) for name, f in functions.items()}
    returns: dict[str, object] = {}  # function -> "all" or the tuple positions that are tensorrt objects
    while True:
        before = (sum(len(s) for s in scopes.values()), len(returns))
        for name, function in functions.items():
            _propagate(function, scopes[name], scopes, functions, returns)
        if before == (sum(len(s) for s in scopes.values()), len(returns)):
            break
    found: set[str] = set()
    for name, function in functions.items():
        for node in ast.walk(function):
            if (
                isinstance(node, ast.Attribute)
                and _is_tensorrt(node.value, scopes[name], returns)
                and not _dunder(node.attr)
            ):
                found.add(node.attr)
            elif isinstance(node, ast.Call) and _is_tensorrt(node.func, scopes[name], returns):
                found.update(k.arg for k in node.keywords if k.arg)  # keyword names are compiled in too
            elif isinstance(node, ast.ClassDef) and any(_is_tensorrt(b, scopes[name], returns) for b in node.bases):
                # Methods a subclass overrides are the ones tensorrt calls (ILogger.log).
                found.update(f.name for f in node.body if isinstance(f, ast.FunctionDef) and not _dunder(f.name))
            member = _members_lookup(node)
            if member and _is_tensorrt(member[0], scopes[name], returns):
                found.add(member[1])
    return found


def _imported_tensorrt(function: ast.FunctionDef) -> set[str]:
    return {
        a.asname or a.name
        for n in ast.walk(function)
        if isinstance(n, ast.Import)
        for a in n.names
        if a.name == "tensorrt"
    }


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _is_tensorrt(node: ast.AST, scope: set[str], returns: dict) -> bool:
    """Whether an expression yields a tensorrt object (not a Python value read through a dunder)."""
    if isinstance(node, ast.Name):
        return node.id in scope
    if isinstance(node, ast.Attribute):
        return not _dunder(node.attr) and _is_tensorrt(node.value, scope, returns)
    if isinstance(node, ast.Subscript):
        return _is_tensorrt(node.value, scope, returns)
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Name):
            return returns.get(node.func.id) == "all"
        return _is_tensorrt(node.func, scope, returns)
    return False


def _propagate(function: ast.FunctionDef, scope: set[str], scopes: dict, functions: dict, returns: dict) -> None:
    """One pass: assignments, loop targets and `with` names from tensorrt values; arguments to parameters; returns."""
    for node in ast.walk(function):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                _bind(target, node.value, scope, returns)
        elif isinstance(node, (ast.For, ast.comprehension)) and _is_tensorrt(node.iter, scope, returns):
            _bind(node.target, node.iter, scope, returns)
        elif isinstance(node, ast.withitem) and node.optional_vars is not None:
            _bind(node.optional_vars, node.context_expr, scope, returns)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in functions:
            params = [a.arg for a in functions[node.func.id].args.args]
            passed = list(zip(params, node.args)) + [(k.arg, k.value) for k in node.keywords]
            scopes[node.func.id].update(p for p, value in passed if _is_tensorrt(value, scope, returns))
        elif isinstance(node, ast.Return) and node.value is not None:
            if isinstance(node.value, ast.Tuple):
                positions = {i for i, e in enumerate(node.value.elts) if _is_tensorrt(e, scope, returns)}
                if positions:
                    returns[function.name] = positions
            elif _is_tensorrt(node.value, scope, returns):
                returns[function.name] = "all"


def _bind(target: ast.AST, value: ast.AST, scope: set[str], returns: dict) -> None:
    if isinstance(target, ast.Name) and _is_tensorrt(value, scope, returns):
        scope.add(target.id)
    elif isinstance(target, ast.Tuple) and isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
        positions = returns.get(value.func.id)
        if isinstance(positions, set):
            scope.update(e.id for i, e in enumerate(target.elts) if i in positions and isinstance(e, ast.Name))


def _members_lookup(node: ast.AST) -> tuple[ast.AST, str] | None:
    """(the enum, the member name) for `ENUM.__members__.get("NAME")` and `ENUM.__members__["NAME"]`."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
        members, key = node.func.value, node.args[0] if node.args else None
    elif isinstance(node, ast.Subscript):
        members, key = node.value, node.slice
    else:
        return None
    if (
        isinstance(members, ast.Attribute)
        and members.attr == "__members__"
        and isinstance(key, ast.Constant)
        and isinstance(key.value, str)
    ):
        return members.value, key.value
    return None


def compiled_names(binary: bytes) -> set[str]:
    """Identifiers a compiled extension can answer to: every identifier that ends a NUL-terminated string.

    pybind11 registers each class, method, property and enum member by a C string. Linkers merge a string into
    the tail of a longer one ("ERROR" into "INTERNAL_ERROR"), so every identifier suffix of a string counts; a
    name found that way may, rarely, be another string's tail rather than a registered name.
    """
    names: set[str] = set()
    for piece in binary.split(b"\0"):
        match = re.search(rb"[A-Za-z_][A-Za-z0-9_]*\Z", piece)
        if match:
            word = match.group()
            names.update(word[i:].decode() for i in range(len(word)) if _IDENTIFIER.fullmatch(word[i:]))
    return names


def check_wheel(wheel: Path, needed: set[str]) -> dict:
    """The wheel's version, the needed names its bindings lack, and which of REMOVED_IN_11 they still hold."""
    with zipfile.ZipFile(wheel) as archive:
        binaries = [n for n in archive.namelist() if re.search(r"/tensorrt[^/]*\.so$", n)]
        if len(binaries) != 1:
            raise SystemExit(f"{wheel.name}: expected one tensorrt*.so in the wheel, found {binaries}")
        available = compiled_names(archive.read(binaries[0]))
    package, version = wheel.name.split("-")[:2]
    return {
        "package": package,
        "version": version,
        "binary": binaries[0],
        "checked": len(needed),
        "missing": sorted(needed - available),
        "removed_in_11_present": [n for n in REMOVED_IN_11 if n in available],
    }


def markdown(results: list[dict], needed: set[str], machine: str) -> str:
    lines = [
        "## TensorRT API check: the engine module against the 10.x and 11.x bindings (no GPU)",
        "",
        f"Machine: {machine}. Command: `scripts/trt_api_check.sh`. "
        f"The {len(needed)} names `edgec/backends/tensorrt_engine.py` reads from tensorrt objects (found with Python's "
        "ast) against the identifiers compiled into each wheel's `tensorrt.so`; the last column is a control: names "
        "NVIDIA's migration guide lists as removed in 11.x, which the check must find in 10.x only.",
        "",
        "| package | version | names checked | missing | removed-in-11 names present |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['package']} | {r['version']} | {r['checked']} | {', '.join(r['missing']) or 'none'} | "
            f"{', '.join(r['removed_in_11_present']) or 'none'} |"
        )
    lines += ["", "Names checked: " + ", ".join(f"`{n}`" for n in sorted(needed)) + "."]
    return "\n".join(lines) + "\n"


def main(wheels: list[str]) -> int:
    needed = tensorrt_names(ENGINE_MODULE.read_text())
    results = [check_wheel(Path(w), needed) for w in wheels]
    for r in results:
        verdict = "ok" if not r["missing"] else "MISSING " + ", ".join(r["missing"])
        print(
            f"{r['package']} {r['version']}: {r['checked']} names checked: {verdict}; "
            f"removed-in-11 names present: {', '.join(r['removed_in_11_present']) or 'none'}"
        )
    (ROOT / "benchmarks" / "results-trt-api-check.json").write_text(
        json.dumps({"names": sorted(needed), "wheels": results}, indent=1) + "\n"
    )
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import machine, write_section

    write_section(
        ROOT / "benchmarks" / "RESULTS.md",
        "trt-api-check",
        markdown(results, needed, machine()),
        "scripts/trt_api_check.sh",
    )
    return 1 if any(r["missing"] for r in results) else 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    raise SystemExit(main(sys.argv[1:]))
