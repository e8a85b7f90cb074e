"""The gateway's own fetch of an ``http(s)`` image URL, for a model it runs in-process (docs/vision.md).

A URL a client sends makes the gateway open a connection on its behalf, so every step is checked:

- only ``http`` and ``https``, no credentials in the URL;
- the host's name is resolved **once**, every address it resolves to is checked (loopback, private,
  link-local and cloud metadata, shared, multicast, reserved: ``addresses.refusal``) unless
  ``images.allowed_hosts`` lists the name or the address, and the connection goes to that checked address
  (the URL is rewritten to it; ``Host`` and TLS's SNI and certificate check keep the name), so a second
  resolution cannot lead elsewhere (DNS rebinding);
- redirects are not followed blindly: each ``Location`` goes through the same checks, at most
  ``images.max_redirects`` of them;
- the whole fetch (resolution, connection, redirects, body) has ``images.fetch_timeout_s``, the body at
  most ``images.max_bytes`` (a ``Content-Length`` above it is refused before reading);
- the response's ``Content-Type`` is not trusted: the bytes are identified by their content when decoded
  (``preprocess.py``).

Every refusal is an ``ImageRefused`` (400) naming the image and the reason.
"""

from __future__ import annotations

import asyncio
import socket
from contextlib import aclosing
from ipaddress import IPv6Address, ip_address
from urllib.parse import urljoin, urlsplit

import httpx

from groupqwen.config import ImagesConfig
from groupqwen.errors import ImageRefused
from groupqwen.modalities.addresses import Address, allowed, refusal

_REDIRECTS = (301, 302, 303, 307, 308)
_CHUNK = 64 * 1024


async def fetch(url: str, where: str, policy: ImagesConfig) -> bytes:
    """The body of ``url`` (``where`` names the image in refusals), fetched under ``policy``."""
    try:
        async with asyncio.timeout(policy.fetch_timeout_s):
            return await _follow(url, where, policy)
    except TimeoutError:
        raise ImageRefused(
            f"{where}: fetching {_shown(url)} took longer than images.fetch_timeout_s "
            f"({policy.fetch_timeout_s:g} s)",
            param=where,
        ) from None


async def _follow(url: str, where: str, policy: ImagesConfig) -> bytes:
    # one deadline for the whole fetch (``fetch``'s); no proxy from the environment: the checked address is
    # the one connected to
    async with httpx.AsyncClient(follow_redirects=False, timeout=None, trust_env=False) as client:
        for hop in range(policy.max_redirects + 1):
            response = await _send(client, url, where, policy)
            async with aclosing(response):
                if response.status_code in _REDIRECTS and "location" in response.headers:
                    if hop == policy.max_redirects:
                        raise ImageRefused(
                            f"{where}: {_shown(url)} redirects more than images.max_redirects "
                            f"({policy.max_redirects}) times",
                            param=where,
                        )
                    url = urljoin(url, response.headers["location"])
                    continue
                if response.status_code != 200:
                    raise ImageRefused(
                        f"{where}: {_shown(url)} answered HTTP {response.status_code}, not an image",
                        param=where,
                    )
                return await _body(response, url, where, policy.max_bytes)
    raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


async def _send(client: httpx.AsyncClient, url: str, where: str, policy: ImagesConfig) -> httpx.Response:
    """``GET url``, connected to one of the checked addresses of its host (in the resolver's order)."""
    targets, headers, extensions = await _pinned(url, where, policy)
    failure: httpx.HTTPError | None = None
    for target in targets:
        request = client.build_request("GET", target, headers=headers, extensions=extensions)
        try:
            return await client.send(request, stream=True)
        except httpx.ConnectError as exc:
            failure = exc  # the next address
        except httpx.HTTPError as exc:
            failure = exc
            break
    raise ImageRefused(
        f"{where}: could not fetch {_shown(url)}: {type(failure).__name__} {failure}".rstrip(), param=where
    )


async def _body(response: httpx.Response, url: str, where: str, limit: int) -> bytes:
    too_big = ImageRefused(
        f"{where}: {_shown(url)} is larger than images.max_bytes ({limit} bytes)", param=where
    )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    data = bytearray()
    try:
        async for piece in response.aiter_raw(_CHUNK):
            data += piece
            if len(data) > limit:
                raise too_big
    except httpx.HTTPError as exc:
        raise ImageRefused(f"{where}: reading {_shown(url)} failed: {exc}", param=where) from None
    if not data:
        raise ImageRefused(f"{where}: {_shown(url)} answered with an empty body", param=where)
    return bytes(data)


async def _pinned(
    url: str, where: str, policy: ImagesConfig
) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """``url`` rewritten to each checked address its host resolves to, with the headers and TLS extension
    that keep the name (``Host``, SNI)."""
    try:
        split = urlsplit(url)
        port = split.port
        hostname = split.hostname
    except ValueError:
        raise ImageRefused(f"{where}: {_shown(url)} is not a valid URL", param=where) from None
    scheme = split.scheme.lower()
    if scheme not in ("http", "https"):
        raise ImageRefused(
            f"{where}: {_shown(url)} is a {scheme or 'scheme-less'} URL; only http and https are fetched",
            param=where,
        )
    if not hostname:
        raise ImageRefused(f"{where}: {_shown(url)} has no host", param=where)
    if split.username is not None or split.password is not None:
        raise ImageRefused(f"{where}: {_shown(url)} carries credentials (user:password@host)", param=where)
    port = port or (443 if scheme == "https" else 80)
    path = (split.path or "/") + (f"?{split.query}" if split.query else "")
    targets = []
    for address in await _checked_addresses(hostname, port, where, policy):
        host = f"[{address}]" if isinstance(address, IPv6Address) else str(address)
        targets.append(f"{scheme}://{host}:{port}{path}")
    default_port = (scheme == "https" and port == 443) or (scheme == "http" and port == 80)
    name = hostname if ":" not in hostname else f"[{hostname}]"
    headers = {"host": name if default_port else f"{name}:{port}", "accept": "image/*"}
    extensions = {"sni_hostname": hostname} if scheme == "https" else {}
    return targets, headers, extensions


async def _checked_addresses(hostname: str, port: int, where: str, policy: ImagesConfig) -> list[Address]:
    """The addresses to connect to: the host itself when it is one, else its name resolved once; every
    address the name has must pass ``refusal`` (or be listed in ``images.allowed_hosts``)."""
    name = hostname.lower().rstrip(".")
    addresses = await _resolve(name, port, where)
    if policy.only_allowed_hosts and not (
        allowed(name, policy.allowed_hosts) or all(allowed(a, policy.allowed_hosts) for a in addresses)
    ):
        raise ImageRefused(
            f"{where}: {hostname!r} is not in images.allowed_hosts, and only the hosts it lists are fetched "
            "(images.only_allowed_hosts: true)",
            param=where,
        )
    if policy.refuse_private and not allowed(name, policy.allowed_hosts):
        for address in addresses:
            reason = refusal(address)
            if reason is not None and not allowed(address, policy.allowed_hosts):
                shown = f"{hostname!r}" if str(address) == name else f"{hostname!r} ({address})"
                raise ImageRefused(
                    f"{where}: {shown} is {reason}: the gateway does not fetch from there. To allow it, "
                    f"add {address} to images.allowed_hosts",
                    param=where,
                )
    return addresses


async def _resolve(name: str, port: int, where: str) -> list[Address]:
    """``name``'s addresses (itself when it is one), resolved once."""
    try:
        return [ip_address(name.split("%")[0])]
    except ValueError:
        pass
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            name, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except (OSError, UnicodeError) as exc:
        raise ImageRefused(f"{where}: the host {name!r} does not resolve ({exc})", param=where) from None
    addresses = list(dict.fromkeys(ip_address(str(info[4][0]).split("%")[0]) for info in infos))
    if not addresses:
        raise ImageRefused(f"{where}: the host {name!r} resolves to no address", param=where)
    return addresses


def _shown(url: str) -> str:
    """``url`` short enough for a message."""
    return repr(url if len(url) <= 200 else url[:200] + "…")
