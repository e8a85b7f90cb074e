"""``image_url`` parts on the wire → ``ImagePart``, and which http(s) URLs may be forwarded at all.

A model's server fetches the http(s) image URLs it is sent, from its own network: a URL naming a loopback,
private or metadata address would make it fetch from there on the client's behalf (server-side request
forgery). So, before anything is forwarded, following ``images:`` in the settings (docs/api.md, "Images"):

- ``forward_urls: false`` refuses every http(s) URL (data URLs only);
- a URL with credentials (``user:password@``) is refused;
- with ``only_allowed_hosts``, a host ``allowed_hosts`` does not list is refused;
- with ``refuse_private`` (the default), a host that is a literal address in a refused range, however
  written (``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``[::ffff:127.0.0.1]`` are all 127.0.0.1, as the
  WHATWG URL standard and ``inet_aton`` read them), or a name kept for such places (``localhost``,
  ``metadata.google.internal`` …), is refused unless ``allowed_hosts`` lists it.

Other names are not resolved here: an answer looked up now could differ from the one the model's server
gets when it fetches (DNS rebinding), so that server's own network policy must cover names.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from ipaddress import IPv4Address, ip_address
from urllib.parse import unquote, urlsplit

from groupqwen.config import ImagesConfig
from groupqwen.errors import InvalidRequest
from groupqwen.messages import ImagePart
from groupqwen.modalities.addresses import Address, allowed, refusal

_DETAILS = ("auto", "low", "high")
_DATA_URL = re.compile(r"data:(?P<type>[^;,]*)(?P<params>[^,]*),(?P<payload>.*)", re.DOTALL | re.IGNORECASE)


def image_of(value: object, where: str, policy: ImagesConfig) -> ImagePart:
    """An ``image_url`` part's object, checked: ``{"url": http(s) URL | data:image/…;base64,…, "detail":
    auto|low|high}`` (``where`` names the part: ``messages[i].content[j]``)."""
    if not isinstance(value, dict) or not isinstance(value.get("url"), str):
        raise InvalidRequest(
            f"{where}.image_url must be an object with a string 'url'", param=f"{where}.image_url"
        )
    url, detail = value["url"], value.get("detail")
    if detail is not None and detail not in _DETAILS:
        raise InvalidRequest(
            f"{where}.image_url.detail must be one of {', '.join(_DETAILS)}",
            param=f"{where}.image_url.detail",
        )
    param = f"{where}.image_url.url"
    scheme = url.partition(":")[0].lower() if ":" in url else ""
    if scheme in ("http", "https"):
        _check_forwardable(url, scheme, param, policy)
    elif scheme == "data":
        _check_data_url(url, param)
    else:
        shown = f"{scheme!r}" if scheme else "none"
        raise InvalidRequest(
            f"{param} must be an http(s) URL or a data:image/…;base64,… URL (scheme: {shown})", param=param
        )
    return ImagePart(url, detail)


def _check_data_url(url: str, param: str) -> None:
    match = _DATA_URL.fullmatch(url)
    media_type = match["type"].lower() if match else ""
    if match is None or not media_type.startswith("image/") or len(media_type) == len("image/"):
        raise InvalidRequest(
            f"{param} is a data URL of type {media_type or 'none'!r}: only image/* is accepted", param=param
        )
    if "base64" not in match["params"].lower().split(";"):
        raise InvalidRequest(f"{param} must be a base64 data URL (data:{media_type};base64,…)", param=param)
    try:
        data = base64.b64decode(match["payload"], validate=True)
    except binascii.Error as exc:
        raise InvalidRequest(f"{param} has a broken base64 payload: {exc}", param=param) from None
    if not data:
        raise InvalidRequest(f"{param} has an empty payload", param=param)


# --------------------------------------------------------------------------------------------------------
# http(s) URLs

_FORBIDDEN = re.compile(r"[\x00-\x20#%/:<>?@\[\\\]^|\x7f]")
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")
_NUMBER = re.compile(r"[0-9]+|0x[0-9a-f]*")
_DIGITS = {16: re.compile(r"[0-9a-f]+"), 8: re.compile(r"[0-7]+"), 10: re.compile(r"[0-9]+")}


def _check_forwardable(url: str, scheme: str, param: str, policy: ImagesConfig) -> None:
    if not policy.forward_urls:
        raise InvalidRequest(
            f"{param} is an {scheme} URL, and this gateway forwards none (images.forward_urls: false): send "
            "the image inline as a data:image/…;base64,… URL",
            param=param,
        )
    if _UNSAFE.search(url):
        raise InvalidRequest(f"{param} holds whitespace or control characters", param=param)
    no_host = InvalidRequest(f"{param} is not a valid {scheme} URL (no host)", param=param)
    try:
        split = urlsplit(url)
        hostname = split.hostname
    except ValueError:
        raise no_host from None
    if not hostname:
        raise no_host
    if "@" in split.netloc:
        raise InvalidRequest(
            f"{param} carries credentials (user:password@host): they are not forwarded; send the image "
            "inline as a data: URL, or from a URL that needs none",
            param=param,
        )
    host = _host(hostname, param)
    if policy.only_allowed_hosts and not allowed(host, policy.allowed_hosts):
        raise InvalidRequest(
            f"{param} points at {hostname!r}, which images.allowed_hosts does not list, and only the hosts "
            "it lists are forwarded (images.only_allowed_hosts: true)",
            param=param,
        )
    if not policy.refuse_private:
        return
    reason = refusal(host)
    if reason is None or allowed(host, policy.allowed_hosts):
        return
    shown = f"{hostname!r}" if str(host) == hostname else f"{hostname!r} ({host})"
    entry = host if isinstance(host, str) else type(host)(int(host))  # without an IPv6 zone
    raise InvalidRequest(
        f"{param} points at {shown}, {reason}: the model's server would fetch it from inside its own "
        f"network, so it is not forwarded. To allow it, add {entry} to images.allowed_hosts (or set "
        "images.refuse_private: false)",
        param=param,
    )


def _host(hostname: str, param: str) -> Address | str:
    """The host as the model's server will read it: an address (however written), or a lower-case name."""
    if ":" in hostname:  # only a bracketed IPv6 address holds one
        try:
            return ip_address(unquote(hostname))
        except ValueError:
            raise InvalidRequest(f"{param} has an invalid IPv6 address [{hostname}]", param=param) from None
    try:
        name = unquote(hostname, errors="strict")
    except UnicodeDecodeError:
        raise InvalidRequest(
            f"{param} has a host that is not UTF-8 once percent-decoded", param=param
        ) from None
    name = unicodedata.normalize("NFKC", name).replace("\u3002", ".").lower()
    if _FORBIDDEN.search(name):
        raise InvalidRequest(f"{param} has a host with characters no host name can hold", param=param)
    labels = name.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()
    if _NUMBER.fullmatch(labels[-1]):  # WHATWG: a host ending in a number is an IPv4 address or invalid
        address = _ipv4(labels)
        if address is None:
            raise InvalidRequest(
                f"{param} has a host {hostname!r} that is not a valid IPv4 address", param=param
            )
        return address
    return ".".join(labels)


def _ipv4(labels: list[str]) -> IPv4Address | None:
    """``labels`` read as ``inet_aton`` and the WHATWG URL standard do: one to four parts, each decimal,
    octal (``0`` first) or hexadecimal (``0x`` first), the last filling the remaining bytes."""
    if len(labels) > 4:
        return None
    numbers = [_ipv4_number(label) for label in labels]
    parts = [n for n in numbers if n is not None]
    if len(parts) < len(numbers) or any(n > 255 for n in parts[:-1]) or parts[-1] >= 256 ** (5 - len(parts)):
        return None
    return IPv4Address(parts[-1] + sum(n << 8 * (3 - i) for i, n in enumerate(parts[:-1])))


def _ipv4_number(label: str) -> int | None:
    if not label:
        return None
    if label.startswith("0x"):
        digits, base = label[2:], 16
    elif len(label) > 1 and label.startswith("0"):
        digits, base = label[1:], 8
    else:
        digits, base = label, 10
    if not digits:
        return 0
    if not _DIGITS[base].fullmatch(digits):
        return None
    digits = digits.lstrip("0") or "0"
    return int(digits, base) if len(digits) <= 12 else 1 << 64  # too large either way; int() stays short
