"""docs/architecture.md's module map names every module under edgec/ and nothing that is gone.

The map is the section "## Module map" of the doc; an entry is a line starting with - `edgec/....py`. Modules are
named by their path relative to the repository root. __init__.py files may be listed but need not be.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"
MAP_HEADING = "## Module map"
ENTRY = re.compile(r"^- `(edgec/[^`]+\.py)`:\s*\S")


def map_section(text: str) -> list[str]:
    """The lines of the module map: from its heading to the next level-2 heading."""
    lines = text.splitlines()
    assert lines.count(MAP_HEADING) == 1, f"{DOC} needs exactly one {MAP_HEADING!r} heading"
    start = lines.index(MAP_HEADING) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end]


def mapped_modules(section: list[str]) -> list[str]:
    """Every path the map's entries name, in order (duplicates kept, so they can be reported)."""
    return [m.group(1) for line in section if (m := ENTRY.match(line))]


def package_modules() -> set[str]:
    return {p.relative_to(ROOT).as_posix() for p in (ROOT / "edgec").rglob("*.py") if "__pycache__" not in p.parts}


def test_module_map_names_every_module_and_nothing_stale():
    section = map_section(DOC.read_text(encoding="utf-8"))
    listed = mapped_modules(section)
    existing = package_modules()
    required = {m for m in existing if not m.endswith("/__init__.py")}
    assert required, "found no modules under edgec/"
    missing = sorted(required - set(listed))
    stale = sorted(set(listed) - existing)
    duplicated = sorted({m for m in listed if listed.count(m) > 1})
    # An entry-like line that the pattern rejects (no description, a wrong path form) would silently drop a module.
    malformed = [line for line in section if line.startswith("- `") and not ENTRY.match(line)]
    problems = []
    if missing:
        problems.append("missing from the module map (add a line `- `path`: its job`):\n  " + "\n  ".join(missing))
    if stale:
        problems.append("named in the module map but not in the tree (remove or rename):\n  " + "\n  ".join(stale))
    if duplicated:
        problems.append("listed more than once:\n  " + "\n  ".join(duplicated))
    if malformed:
        problems.append("map lines not of the form - `edgec/....py`: job:\n  " + "\n  ".join(malformed))
    assert not problems, f"{DOC.relative_to(ROOT)}, section {MAP_HEADING!r}:\n" + "\n".join(problems)


def test_map_parser_reads_only_the_map_section():
    text = f"""# doc
- `edgec/outside_before.py`: not in the map
{MAP_HEADING}
### edgec/
- `edgec/a.py`: job a
- `edgec/ops/b.py`: job b
prose `edgec/c.py` here
## Next
- `edgec/outside_after.py`: not in the map
"""
    assert mapped_modules(map_section(text)) == ["edgec/a.py", "edgec/ops/b.py"]
