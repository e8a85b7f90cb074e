"""``groupqwen models pull``: download a GGUF with resume, checksum and an atomic rename.

A download writes ``<name>.partial`` next to its destination and resumes it with an HTTP ``Range`` request,
both when the connection drops mid-file (retried here) and when a later ``pull`` finds the partial file.
A host that cannot be reached at all (refused, unknown name, connect timeout) is tried ``connect_retries``
more times, briefly, then reported in one line: there is nothing to resume.
The result is checked (sha256 when known — given, or from Hugging Face's ``X-Linked-Etag`` — and the GGUF
magic) before it is renamed into place, so a partial or corrupt file never carries the final name.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx

from groupqwen import log
from groupqwen.catalog import ModelSpec
from groupqwen.errors import DownloadError, InvalidRequest

_log = log.get(__name__)
_HF = "https://huggingface.co"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
Progress = Callable[[int, int | None], None]  # (bytes done, total or None)


@dataclass(frozen=True)
class Source:
    url: str
    filename: str
    sha256: str | None = None


def resolve(what: str, catalog: Mapping[str, ModelSpec]) -> Source:
    """A catalog id, ``hf:Org/Repo/file.gguf``, a Hugging Face page or file URL, or any http(s) URL."""
    spec = catalog.get(what)
    if spec is not None:
        if not spec.source.startswith("hf:") or not spec.filename:
            raise InvalidRequest(f"{what!r} is not downloadable ({spec.source or 'no source'}); pass a URL")
        what = f"{spec.source}/{spec.filename}"
    if what.startswith("hf:"):
        parts = what[3:].strip("/").split("/")
        if len(parts) < 3:
            raise InvalidRequest(f"{what!r}: expected hf:Org/Repo/file.gguf")
        org, repo, path = parts[0], parts[1], "/".join(parts[2:])
        url = f"{_HF}/{org}/{repo}/resolve/main/{path}"
    elif what.startswith(("http://", "https://")):
        url = what
        if url.startswith(_HF + "/") and "/blob/" in url:
            url = url.replace("/blob/", "/resolve/", 1)  # the page of a file → the file itself
    else:
        known = ", ".join(sorted(catalog))
        raise InvalidRequest(f"{what!r} is neither a catalog id ({known}) nor an http(s) or hf: URL")
    filename = unquote(urlparse(url).path.rsplit("/", 1)[-1])
    if not filename or "/" in filename or filename.startswith("."):
        raise InvalidRequest(f"cannot tell a file name from {url!r}")
    return Source(url=url, filename=filename)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def download(
    source: Source,
    dest_dir: Path,
    *,
    sha256: str | None = None,
    progress: Progress | None = None,
    client: httpx.Client | None = None,
    retries: int = 5,
    connect_retries: int = 2,
    timeout: float = 30.0,
    sleep: Callable[[float], None] | None = None,
) -> Path:
    """Download ``source`` into ``dest_dir``; return the final path. Already there: returned as is.

    ``retries``: how many times a transfer cut short is resumed; ``connect_retries``: how many times a host
    that could not be connected to is tried again (both wait ``sleep``, backing off, between tries)."""
    sleep = sleep or time.sleep
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / source.filename
    expected = (sha256 or source.sha256 or "").lower() or None
    if final.is_file():
        if expected is None or _sha256(final) == expected:
            return final
        raise DownloadError(f"{final} exists with a different sha256 than {expected}; remove it first")
    partial = final.with_name(final.name + ".partial")
    own_client = client is None
    http = client or httpx.Client(follow_redirects=True, timeout=httpx.Timeout(timeout))
    try:
        attempt = 0
        while True:
            try:
                total, etag_sha = _fetch(http, source.url, partial, progress)
                break
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if attempt >= connect_retries:
                    raise DownloadError(_unreachable(source.url, exc, attempt + 1, partial)) from None
                _log.debug("cannot connect, trying again", url=source.url, error=str(exc))
            except (httpx.TransportError, _Truncated) as exc:
                if attempt >= retries:
                    raise DownloadError(
                        f"download of {source.url} failed after {attempt + 1} attempts: {exc}"
                        + _resume_hint(partial)
                    ) from None
                _log.warning("download interrupted, resuming", url=source.url, error=str(exc))
            sleep(min(2**attempt * 0.2, 5))
            attempt += 1
    finally:
        if own_client:
            http.close()
    size = partial.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"{partial}: got {size} bytes, the server announced {total}")
    expected = expected or etag_sha
    if expected is not None:
        got = _sha256(partial)
        if got != expected:
            partial.unlink()
            raise DownloadError(f"{source.url}: sha256 is {got}, expected {expected}; the file was removed")
    with partial.open("rb") as f:
        if f.read(4) != b"GGUF":
            partial.unlink()
            raise DownloadError(f"{source.url} is not a GGUF file; the file was removed")
        os.fsync(f.fileno())
    os.replace(partial, final)
    return final


def _resume_hint(partial: Path) -> str:
    if partial.is_file() and partial.stat().st_size:
        return f"; run the same command again to resume from {partial.stat().st_size} bytes"
    return ""


def _unreachable(url: str, exc: Exception, attempts: int, partial: Path) -> str:
    """One line: which host could not be reached, and why (refused, unknown name, timed out)."""
    parsed = urlparse(url)
    host = parsed.netloc or url
    why = str(exc) or type(exc).__name__
    tries = f" ({attempts} attempts)" if attempts > 1 else ""
    return f"cannot reach {host}{tries}: {why} (while fetching {url})" + _resume_hint(partial)


class _Truncated(Exception):
    pass


def _fetch(
    http: httpx.Client, url: str, partial: Path, progress: Progress | None
) -> tuple[int | None, str | None]:
    """Fetch the rest of ``url`` into ``partial``; return the total size and a sha256 the server gave."""
    offset = partial.stat().st_size if partial.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with http.stream("GET", url, headers=headers) as response:
        if response.status_code == 416 and offset:  # nothing left to fetch
            return offset, None
        if response.status_code not in (200, 206):
            raise DownloadError(f"GET {url}: HTTP {response.status_code}")
        if response.status_code == 200:
            offset = 0  # the server ignored Range: start over
        etag = (response.headers.get("x-linked-etag") or response.headers.get("etag") or "").strip('W/"')
        length = response.headers.get("content-length")
        total = offset + int(length) if length and length.isdigit() else None
        done = offset
        with partial.open("r+b" if offset else "wb") as f:
            f.seek(offset)
            f.truncate()
            for block in response.iter_bytes():
                f.write(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)
        if total is not None and done < total:
            raise _Truncated(f"connection closed at {done} of {total} bytes")
    return total, etag.lower() if _SHA256.match(etag.lower()) else None
