"""``image_url`` parts on the wire → ``ImagePart``: an http(s) URL with a host, or a base64
``data:image/…`` URL, and the client's ``detail``."""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import urlsplit

from groupqwen.errors import InvalidRequest
from groupqwen.messages import ImagePart

_DETAILS = ("auto", "low", "high")
_DATA_URL = re.compile(r"data:(?P<type>[^;,]*)(?P<params>[^,]*),(?P<payload>.*)", re.DOTALL | re.IGNORECASE)


def image_of(value: object, where: str) -> ImagePart:
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
        try:
            host = urlsplit(url).hostname
        except ValueError:
            host = None
        if not host:
            raise InvalidRequest(f"{param} is not a valid {scheme} URL (no host)", param=param)
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
