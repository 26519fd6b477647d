"""Where webhook endpoints may point (issue 8 §5): the URL policy the API and the portal apply when an
endpoint is created or changed, and the address check delivery applies to every address a host resolves
to (a name can resolve to anything, and can change what it resolves to after the endpoint was saved).

Sandbox endpoints may be anything http(s), localhost included: that is how a merchant develops. Live
endpoints must use https and may not reach link-local, unspecified or cloud-metadata addresses, which
would hand the deployment's instance credentials to whoever registered the URL. Private ranges (10/8,
192.168/16, loopback) stay allowed in live mode: a self-hosted deployment delivers to its own network."""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048

# Cloud instance-metadata services: GCP's names, AWS's IPv6 address, Alibaba's address (AWS, Azure and
# GCP's 169.254.169.254 is link-local already).
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)

# What inet_aton reads as an IPv4 address although ipaddress does not: 2852039166, 0xA9FEA9FE, 169.254.43518.
_LEGACY_IPV4 = re.compile(r"^(?:0x[0-9a-f]+|[0-9]+)(?:\.(?:0x[0-9a-f]+|[0-9]+)){0,3}$")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def url_problem(url: str, environment: str) -> str | None:
    """Why `url` cannot be an endpoint's in `environment` ("sandbox" or "live"), as a sentence fragment
    that follows the field name ("url must …"), or None when it can."""
    if len(url) > MAX_URL_LENGTH:
        return f"must be at most {MAX_URL_LENGTH} characters (it has {len(url)})"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return "must not contain spaces or control characters"
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return "must be an http:// or https:// URL, e.g. https://example.com/webhooks"
    try:
        host = (parts.hostname or "").rstrip(".")
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number in 0–65535)
    except ValueError:
        return "has an invalid host or port"
    if not host:
        return "must name a host, e.g. https://example.com/webhooks"
    if environment != "live":
        return None
    if scheme != "https":
        return "must use https:// in the live environment (http:// is allowed in the sandbox only)"
    if host in METADATA_HOSTS:
        return f"must not point at the cloud metadata service {host!r}"
    address = literal_address(host)
    if address is not None:
        return address_problem(address, environment)
    return None


def address_problem(address: IpAddress, environment: str) -> str | None:
    """Why delivery in `environment` may not connect to `address`, or None when it may."""
    if environment != "live":
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return f"must not point at the cloud metadata address {address}"
    if address.is_unspecified:
        return f"must not point at the unspecified address {address}"
    if address.is_link_local:
        return f"must not point at the link-local address {address}"
    return None


def literal_address(host: str) -> IpAddress | None:
    """The IP address `host` spells (any form the resolver would read as one), or None for a name."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    if _LEGACY_IPV4.match(host.lower()):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None
