"""The endpoint URL policy and the delivery-time address check (domain/webhook_urls.py)."""

from __future__ import annotations

import ipaddress

import pytest

from domain.webhook_urls import MAX_URL_LENGTH, address_problem, literal_address, url_problem


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hooks",
        "https://example.com:8443/hooks?x=1#frag",
        "https://user:pw@example.com/",
        "https://10.0.0.7/hooks",  # private ranges: a self-hosted deployment delivers inside its network
        "https://127.0.0.1:9000/",
        "https://[2001:db8::1]/",
        "HTTPS://Example.COM/",
        "https://example.com/" + "a" * (MAX_URL_LENGTH - len("https://example.com/")),
    ],
)
def test_allowed_everywhere(url: str) -> None:
    assert url_problem(url, "live") is None
    assert url_problem(url, "sandbox") is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://example.com/hooks", "must use https://"),
        ("https://169.254.169.254/latest/meta-data/", "cloud metadata address 169.254.169.254"),
        ("https://169.254.1.1/", "link-local address 169.254.1.1"),
        ("https://[fe80::1]/", "link-local address fe80::1"),
        ("https://[fe80::1%25eth0]/", "link-local address"),
        ("https://0.0.0.0/", "unspecified address 0.0.0.0"),
        ("https://[::]/", "unspecified address ::"),
        ("https://metadata.google.internal/", "metadata service 'metadata.google.internal'"),
        ("https://Metadata.Google.Internal./", "metadata service"),
        ("https://metadata/", "metadata service"),
        ("https://[fd00:ec2::254]/", "metadata address fd00:ec2::254"),
        ("https://100.100.100.200/", "metadata address 100.100.100.200"),
        ("https://[::ffff:169.254.169.254]/", "metadata address 169.254.169.254"),
        # What the resolver reads as 169.254.169.254 although it is no dotted quad.
        ("https://2852039166/", "metadata address 169.254.169.254"),
        ("https://0xA9FEA9FE/", "metadata address 169.254.169.254"),
        ("https://169.254.43518/", "metadata address 169.254.169.254"),
        ("https://0/", "unspecified address 0.0.0.0"),
    ],
)
def test_live_refuses(url: str, problem: str) -> None:
    message = url_problem(url, "live")
    assert message is not None and problem in message, message
    assert url_problem(url.replace("https://", "http://", 1), "sandbox") is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.com/", "http:// or https://"),
        ("javascript:alert(1)", "http:// or https://"),
        ("example.com/hooks", "http:// or https://"),
        ("", "http:// or https://"),
        ("https://", "must name a host"),
        ("https:///path", "must name a host"),
        ("https://example.com:70000/", "invalid host or port"),
        ("https://example.com:port/", "invalid host or port"),
        ("https://exa mple.com/", "spaces or control characters"),
        ("https://example.com/\n", "spaces or control characters"),
        ("https://example.com/" + "a" * MAX_URL_LENGTH, f"at most {MAX_URL_LENGTH} characters"),
    ],
)
def test_malformed_everywhere(url: str, problem: str) -> None:
    for environment in ("sandbox", "live"):
        message = url_problem(url, environment)
        assert message is not None and problem in message, (environment, message)


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.216.34", True),
        ("10.0.0.1", True),
        ("127.0.0.1", True),
        ("2606:2800:220:1::1", True),
        ("169.254.169.254", False),
        ("169.254.0.1", False),
        ("fe80::abcd", False),
        ("0.0.0.0", False),
        ("::", False),
        ("fd00:ec2::254", False),
        ("100.100.100.200", False),
        ("100.100.100.201", True),  # carrier-grade NAT, not the metadata service
        ("::ffff:169.254.169.254", False),
        ("::ffff:93.184.216.34", True),
    ],
)
def test_delivery_address_check(address: str, allowed: bool) -> None:
    ip = ipaddress.ip_address(address)
    assert (address_problem(ip, "live") is None) is allowed
    assert address_problem(ip, "sandbox") is None


def test_literal_address() -> None:
    assert literal_address("example.com") is None
    assert literal_address("1.2.3.4") == ipaddress.ip_address("1.2.3.4")
    assert literal_address("[::1]") == ipaddress.ip_address("::1")
    assert literal_address("2852039166") == ipaddress.ip_address("169.254.169.254")
    assert literal_address("1.2.3.4.5") is None
    assert literal_address("999.1.1.1") is None
    assert literal_address("123abc") is None
