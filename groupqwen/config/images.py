"""``images:``: which ``image_url`` URLs the gateway forwards to a model's server, which fetches them,
and how the gateway fetches and prepares images for the models it runs itself (docs/vision.md). The URL
check is at the edge, ``api/schemas/images.py``; fetching and preprocessing in ``modalities/``."""

from __future__ import annotations

import ipaddress
import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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

    fetch_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="Seconds the gateway gives one http(s) image (resolution, connection, redirects, body) "
        "when it fetches it itself (for a model it runs in-process)",
    )
    max_bytes: int = Field(
        20_000_000,
        ge=1024,
        description="Most bytes of one image, fetched or inline (a data: URL's decoded payload)",
    )
    max_redirects: int = Field(
        3, ge=0, le=20, description="Redirects the gateway follows when it fetches an image (each re-checked)"
    )
    max_image_pixels: int = Field(
        50_000_000,
        ge=1,
        description="Most pixels (width × height) an image may declare before it is decoded: the guard "
        "against decompression bombs",
    )
    min_pixels: int = Field(
        3_136,
        ge=1,
        description="A vision model's smallest image (pixels, after resizing; Qwen-VL's min_pixels: "
        "4 × 28 × 28); models.<id>.min_pixels overrides it",
    )
    max_pixels: int = Field(
        1_003_520,
        ge=784,
        description="A vision model's largest image (pixels, after resizing; Qwen-VL's max_pixels: "
        "1280 × 28 × 28, about 1280 image tokens); larger images are scaled down, keeping their aspect; "
        "models.<id>.max_pixels overrides it",
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _normalise_hosts(cls, value: list[str]) -> list[str]:
        return [_allowed_host(entry) for entry in value]

    @model_validator(mode="after")
    def _budget_is_a_range(self) -> ImagesConfig:
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) is above max_pixels ({self.max_pixels})")
        return self
