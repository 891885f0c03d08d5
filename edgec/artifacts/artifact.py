"""The artifact folder: its files' hashes, atomic placement and loading (the manifest itself is edgec.artifacts.manifest)."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from edgec.artifacts.manifest import MANIFEST, Manifest
from edgec.errors import InputError, first_line
from edgec.interrupts import raise_if_interrupted
from edgec.targets import SessionSettings

MAX_BUNDLE_BYTES = 8 << 30
"""Most bytes a .zip bundle may unpack to (mpnet's largest bundle is ~0.5 GB): a zip bomb is refused, not unpacked."""
MAX_BUNDLE_FILES = 10_000
_VERSIONED = ("edgec", "torch", "transformers", "onnx", "onnxruntime", "optimum-onnx", "tokenizers")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def file_table(folder: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file in the folder except the manifest, by relative path."""
    return {
        str(p.relative_to(folder)): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


@contextlib.contextmanager
def staged_output(out: Path, *, force: bool) -> Iterator[Path]:
    """A temporary folder beside `out`, moved to `out` (or zipped to it, for a .zip) only if the block completes.

    Nothing is left at `out` when the block raises (an interrupt included); an existing `out` is replaced only with
    `force`. A lock beside `out` makes a second run into the same `out` fail at once, and what a killed run left
    (its staging folder, a half-written zip) is removed before this one starts.
    """
    out = Path(out)
    check_output_path(out, force=force)
    with output_lock(out):
        check_output_path(out, force=force)  # another run may have finished while this one took the lock
        remove_leftovers(out)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
        try:
            yield staging
            raise_if_interrupted()  # a signal whose raise was lost must not let a build it stopped reach --out
            _place(staging, out)
        except BaseException:
            remove_leftovers(out)
            raise


def _place(staging: Path, out: Path) -> None:
    if out.suffix == ".zip":
        zip_folder(staging, out)
        shutil.rmtree(staging, ignore_errors=True)
    elif out.exists():
        retired = staging.with_suffix(".old")
        os.replace(out, retired)
        os.replace(staging, out)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, out)


def _lock_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.lock")


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on `out` for the block; InputError at once if another process holds it.

    flock locks die with their process, so a killed run never leaves `out` locked. The lock file is removed on
    release; a run that locked a file just removed checks the inode and takes the lock again on the new file.
    """
    path = _lock_path(out)
    while True:
        handle = open(path, "a+")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            handle.close()
            raise InputError(
                f"another edgec run ({owner}) is writing {out}; wait for it to finish or choose another --out"
            ) from None
        if path.exists() and os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino:
            break
        handle.close()  # the file was removed by the run that held it: lock the new one
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        handle.close()


def remove_leftovers(out: Path) -> None:
    """Staging folders and partial files of runs into `out` that died (only call with the lock held)."""
    lock = _lock_path(out).name
    for path in out.parent.iterdir():
        if path.name.startswith(f".{out.name}.") and path.name != lock and path.name.endswith((".partial", ".old")):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


def zip_folder(folder: Path, out: Path) -> None:
    """A reproducible zip of the folder's files (sorted, fixed timestamps), written beside `out` and renamed onto it."""
    partial = out.with_name(f".{out.name}.partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(str(path.relative_to(folder)), date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, (path.stat().st_mode & 0o777) << 16
            bundle.writestr(info, path.read_bytes())
    os.replace(partial, out)


def check_output_path(out: Path, *, force: bool) -> None:
    """Fail early (before any work) on an output path that cannot be written."""
    bundle = out.suffix == ".zip"
    if out.exists() and not force:
        raise InputError(f"output {out} already exists; choose another --out or pass --force to replace it")
    if out.exists() and out.is_dir() == bundle:
        raise InputError(
            f"output {out} is a {'folder' if bundle else 'file'}; choose a {'.zip file' if bundle else 'folder'} path for --out"
        )
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {parent} ({exc.strerror}); choose a writable --out") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{parent} is not writable; choose a writable --out")


@dataclass(frozen=True)
class Artifact:
    """A built artifact on disk."""

    path: Path
    manifest: Manifest

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest.model_file

    @property
    def session(self) -> SessionSettings:
        """The ONNX Runtime settings chosen for this artifact (by its profile for its instruction set, or by
        `edgec bench --tune`); manifests written before edgec recorded them fall back to the profile's."""
        return self.manifest.session.settings if self.manifest.session else self.manifest.target.session

    def tokenizer(self):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - transformers raises many types for one cause
            raise InputError(
                f"{self.path}: the tokenizer does not load ({first_line(exc)}); the artifact is damaged, rebuild it"
            ) from None


def load_artifact(path: str | Path) -> Artifact:
    """Open an artifact folder (or a .zip bundle, unpacked into a temporary folder), checking that it is complete."""
    path = Path(path)
    if path.suffix == ".zip" and path.is_file():
        path = _unpack(path)
    artifact = Artifact(path, Manifest.read(path))
    if not artifact.model_path.is_file():
        raise InputError(f"{path} lacks {artifact.manifest.model_file}; the artifact is incomplete, rebuild it")
    return artifact


def _unpack(bundle: Path) -> Path:
    """Unpack a .zip bundle into a temporary folder that is removed when the process exits.

    Refused before anything is written: unsafe paths, more than MAX_BUNDLE_FILES files, or more than
    MAX_BUNDLE_BYTES unpacked (zipfile stops a member at its declared size, so the declared sizes bound the work).
    """
    folder = Path(tempfile.mkdtemp(prefix=f"edgec-{bundle.stem}-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    try:
        with zipfile.ZipFile(bundle) as archive:
            members = archive.infolist()
            for member in members:
                if Path(member.filename).is_absolute() or ".." in Path(member.filename).parts:
                    raise InputError(f"{bundle} holds an unsafe path {member.filename!r}; it is not an edgec bundle")
            unpacked = sum(member.file_size for member in members)
            if len(members) > MAX_BUNDLE_FILES or unpacked > MAX_BUNDLE_BYTES:
                raise InputError(
                    f"{bundle} would unpack to {len(members)} files and {unpacked / 1e9:.1f} GB, beyond the "
                    f"{MAX_BUNDLE_FILES} files and {MAX_BUNDLE_BYTES / 1e9:.1f} GB an edgec bundle may hold; "
                    "it is not an edgec bundle"
                )
            archive.extractall(folder)
    except zipfile.BadZipFile as exc:
        raise InputError(f"{bundle} is not a valid zip ({exc}); rebuild the bundle") from None
    return folder


def verify_hashes(artifact: Artifact) -> list[str]:
    """Files whose sha256 no longer matches the manifest (changed, missing or added)."""
    recorded = artifact.manifest.files
    current = file_table(artifact.path)
    names = sorted(set(recorded) | set(current))
    return [n for n in names if recorded.get(n, {}).get("sha256") != current.get(n, {}).get("sha256")]
