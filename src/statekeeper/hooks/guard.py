"""Where a webhook may be delivered: not to loopback, link-local or cloud metadata.

A subscription's URL is chosen by whoever may add hooks, and the deliveries
come from inside the network the server runs in. Without a guard a hook could
reach the server's own admin routes on loopback, or the cloud's instance
metadata service (169.254.169.254 and its kin) and its credentials. Private
addresses (10/8, 192.168/16, …) stay allowed: receivers usually live there.
``hooks_allow`` lists hosts and networks allowed in spite of the guard (the
tests' receivers listen on 127.0.0.1).

The host is resolved and every address checked when the hook is added, and
again for each connection the sender opens (a name that later resolves
elsewhere is caught then); the connection goes to an address so checked, not
to the name resolved once more. A kept-alive connection stays with the address
it was checked for. Redirects are not followed.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from statekeeper.errors import BadRequest
from statekeeper.security.redaction import redacted

__all__ = ["check_destination", "destinations", "parse_allow"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_METADATA_HOSTS = {"metadata.google.internal", "metadata.goog", "metadata"}
_METADATA = [
    ipaddress.ip_network("169.254.0.0/16"),  # AWS, GCP, Azure, OpenStack metadata
    ipaddress.ip_network("fd00:ec2::/32"),  # AWS over IPv6
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud
]


#: A DNS name: dot-separated labels of letters, digits, '-' (and '_', seen in the wild).
_HOST_NAME = re.compile(
    r"(?=.{1,253}\.?$)[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
    r"(?:\.[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?)*\.?"
)


def parse_allow(text: str | None) -> tuple[IPNetwork | str, ...]:
    """``hooks_allow``: comma-separated host names, addresses and networks.

    Raises ValueError (the settings' parsers' error) for an entry that is none of
    them: kept as a name, ``127.0.0.1:9999`` or ``10.0.0.0/33`` would never match.
    """
    out: list[IPNetwork | str] = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
            continue
        except ValueError:
            pass
        name = item.lower()
        if (
            "/" in name
            or ":" in name
            or re.fullmatch(r"[0-9.]+", name)
            or not _HOST_NAME.fullmatch(name)
        ):
            raise ValueError(
                f"{item!r} is neither a host name, an address nor a network; entries are "
                "hosts or networks without ports, e.g. hooks.internal, 127.0.0.1, 10.0.0.0/8"
            )
        out.append(name)
    return tuple(out)


def _refused(address: IPAddress) -> str | None:
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local or any(address in net for net in _METADATA):
        return "a link-local or cloud metadata address"
    if address.is_unspecified or address.is_multicast or address.is_reserved:
        return "not a unicast address"
    return None


def check_destination(url: str, allow: Sequence[IPNetwork | str]) -> None:
    """Raise BadRequest when ``url`` leads somewhere deliveries may not go."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and (parts.hostname or "").lower() in allow:
        return  # allowed by name: not resolved until a delivery connects
    destinations(url, allow)


def destinations(url: str, allow: Sequence[IPNetwork | str]) -> list[tuple[int, tuple[Any, ...]]]:
    """Where a connection to ``url`` may go: (address family, socket address) of each
    address its host resolves to, every one checked (BadRequest when one is refused).
    A connection is made to one of these, never to the name resolved again: the name
    cannot lead elsewhere between the check and the connection."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise BadRequest(f"the hook URL {redacted(url)!r} must be http(s)://HOST[:PORT]/…")
    if host not in allow and host in _METADATA_HOSTS:
        raise BadRequest(f"the hook URL {redacted(url)!r} names a cloud metadata service")
    import socket  # here: only a check of a destination resolves one

    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        raise BadRequest(f"the hook URL's host {host!r} cannot be resolved: {exc}") from exc
    if host in allow:
        return [(info[0], info[4]) for info in infos]
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            # ::ffff:127.0.0.1 reaches 127.0.0.1 on a dual-stack host: judged as that address.
            address = address.ipv4_mapped
        if any(isinstance(a, IPNetwork) and address in a for a in allow):
            continue
        why = _refused(address)
        if why is not None:
            raise BadRequest(
                f"the hook URL {redacted(url)!r} resolves to {address}, {why}; deliveries "
                "may not go there (list it in hooks_allow if you mean it)"
            )
    return [(info[0], info[4]) for info in infos]
