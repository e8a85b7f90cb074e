"""Which network addresses and names an image URL may lead to: loopback, private, link-local (cloud
metadata), shared, multicast, reserved and unspecified ranges, and the names kept for such places, are
refused unless ``images.allowed_hosts`` lists them. The API checks a URL's host as written before it
forwards the URL (``api/schemas/images.py``); the fetcher checks every address a name resolves to before
it connects (``fetch.py``)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network

Address = IPv4Address | IPv6Address

_LOCAL_NAME = "a name for the model's server itself"
_INTERNAL_NAME = "a name kept for internal networks and cloud metadata services"
_REFUSED_NAMES = {
    "localhost": _LOCAL_NAME,
    "ip6-localhost": _LOCAL_NAME,
    "ip6-loopback": _LOCAL_NAME,
    "metadata": _INTERNAL_NAME,
    "metadata.goog": _INTERNAL_NAME,
    "instance-data": _INTERNAL_NAME,
}
_REFUSED_SUFFIXES = {
    ".localhost": _LOCAL_NAME,
    ".localdomain": _LOCAL_NAME,
    ".internal": _INTERNAL_NAME,  # metadata.google.internal, instance-data.ec2.internal
    ".local": "a multicast DNS name of the local network",
    ".home.arpa": "a name of a home network",
}
_REFUSED_V4: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(network), reason)
    for network, reason in (
        ("0.0.0.0/8", "an unspecified ('this host')"),
        ("127.0.0.0/8", "a loopback"),
        ("10.0.0.0/8", "a private"),
        ("172.16.0.0/12", "a private"),
        ("192.168.0.0/16", "a private"),
        ("169.254.0.0/16", "a link-local (cloud metadata: 169.254.169.254)"),
        ("100.64.0.0/10", "a shared (carrier-grade NAT, some cloud metadata)"),
        ("192.0.0.0/24", "a reserved (IETF protocol assignments)"),
        ("198.18.0.0/15", "a reserved (benchmarking)"),
        ("224.0.0.0/4", "a multicast"),
        ("240.0.0.0/4", "a reserved (and broadcast)"),
    )
)
_REFUSED_V6: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(network), reason)
    for network, reason in (
        ("::/128", "an unspecified"),
        ("::1/128", "a loopback"),
        ("fc00::/7", "a unique local (private)"),
        ("fe80::/10", "a link-local"),
        ("fec0::/10", "a site-local (private)"),
        ("ff00::/8", "a multicast"),
    )
)
# ``unquote``d and NFKC-folded, a host still holding one of these is no host (WHATWG's forbidden domain
# code points); rejecting them also closes the gaps between URL parsers (``http://127.0.0.1\.example.com``)


def embedded(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 one carries: IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    packed = int(address)
    if packed >> 32 == 0x64FF9B << 64 or (packed >> 32 == 0 and packed > 1):  # NAT64, IPv4-compatible
        return IPv4Address(packed & 0xFFFFFFFF)
    return None


def refusal(host: Address | str) -> str | None:
    """Why ``host`` is not forwarded (``refuse_private``), or ``None``."""
    if isinstance(host, str):
        if host in _REFUSED_NAMES:
            return _REFUSED_NAMES[host]
        for suffix, why in _REFUSED_SUFFIXES.items():
            if host.endswith(suffix):
                return why
        return None
    if isinstance(host, IPv6Address):
        for network6, why in _REFUSED_V6:
            if host in network6:
                return f"{why} address ({network6})"
        inner = embedded(host)
        if inner is None:
            return None
        reason = refusal(inner)
        return None if reason is None else f"an IPv6 form of {inner}, {reason}"
    for network4, why in _REFUSED_V4:
        if host in network4:
            return f"{why} address ({network4})"
    return None


def allowed(host: Address | str, allowed_hosts: list[str]) -> bool:
    """Whether ``allowed_hosts`` (normalised by ``ImagesConfig``) lists ``host``."""
    inner = embedded(host) if isinstance(host, IPv6Address) else None
    for entry in allowed_hosts:
        if isinstance(host, str):
            if host == entry or (entry.startswith("*.") and host.endswith(entry[1:])):
                return True
            continue
        try:
            network = ip_network(entry)
        except ValueError:
            continue  # a name
        if host in network or (inner is not None and inner in network):
            return True
    return False
