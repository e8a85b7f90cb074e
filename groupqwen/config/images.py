"""``images:``: which ``image_url`` URLs the gateway forwards to a model's server, which fetches them
(docs/api.md, "Images"). The check itself is at the edge, ``api/schemas/images.py``."""

from __future__ import annotations

import ipaddress
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

_NAME = re.compile(r"(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?")
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")


def _allowed_host(entry: str) -> str:
    """``entry`` normalised: a CIDR network or address as ``ipaddress`` writes it, or a lower-case host name
    (``*.`` in front: any name under it); anything else is an error naming the entry."""
    value = entry.strip().lower().removeprefix("[").removesuffix("]")
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        pass
    if not _NAME.fullmatch(value):
        raise ValueError(f"{entry!r} is neither a host name nor an address or CIDR network")
    if _NUMERIC_LABEL.fullmatch(value.rstrip(".").rsplit(".", 1)[-1]):
        raise ValueError(f"{entry!r} reads as an IPv4 address: write it dotted (10.0.0.5, 10.0.0.0/8)")
    return value.rstrip(".")


class ImagesConfig(BaseModel):
    """What becomes of ``http(s)`` image URLs: a model's server fetches them from its own network, so a URL
    naming a private address is a request into that network on the client's behalf."""

    model_config = ConfigDict(extra="forbid")

    forward_urls: bool = Field(
        True,
        description="Forward http(s) image URLs to the model's server, which fetches them; false: only "
        "data: URLs are accepted and any http(s) image URL is a 400",
    )
    refuse_private: bool = Field(
        True,
        description="Refuse (400) image URLs whose host is a literal address that is loopback, private, "
        "link-local (the cloud metadata address 169.254.169.254 among them), shared, multicast, reserved or "
        "unspecified, however written (2130706433, 0x7f000001, [::ffff:127.0.0.1] …), or a name kept for "
        "such places (localhost, *.localhost, *.local, *.internal such as metadata.google.internal, "
        "metadata.goog …). Other names are not resolved: the model server's own network policy must cover "
        "them",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts forwarded even though refuse_private would refuse them: host names (*.name: any "
        "name under it), addresses or CIDR networks, e.g. images.internal, 10.20.0.0/16",
        examples=[["images.internal", "*.assets.corp.internal", "10.20.0.0/16", "fd12:3456::/48"]],
    )
    only_allowed_hosts: bool = Field(
        False,
        description="Forward only the http(s) image URLs whose host allowed_hosts lists (a strict "
        "allow-list); any other host is a 400",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _normalise_hosts(cls, value: list[str]) -> list[str]:
        return [_allowed_host(entry) for entry in value]
