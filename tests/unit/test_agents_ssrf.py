"""The http_get tool's SSRF guard: the allow-list, and the address classes refused unless a host is listed."""

from __future__ import annotations

import ipaddress

import pytest

from shared_ollama.service.agents.tools.ssrf import (
    HostRule,
    Refused,
    address_problem,
    check_url,
    parse_allow_list,
    vet_addresses,
)


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.8.9.10", "a loopback address"),
        ("::1", "a loopback address"),
        ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("fc00::1", "a private address"),
        ("fd12:3456::1", "a private address"),
        ("169.254.169.254", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("224.0.0.1", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("0.0.0.0", "an unspecified address"),
        ("::", "an unspecified address"),
        ("240.0.0.1", "a reserved address"),
        ("100.64.0.1", "not a public address"),
        ("::ffff:127.0.0.1", "a loopback address (inside an IPv6 address)"),
        ("::ffff:10.0.0.1", "a private address (inside an IPv6 address)"),
        ("::ffff:169.254.169.254", "a link-local address (inside an IPv6 address)"),
        ("2002:7f00:1::", "a loopback address (inside an IPv6 address)"),
        ("64:ff9b::a00:1", "a private address (inside an IPv6 address)"),
    ],
)
def test_non_public_addresses_are_classified(address: str, problem: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) == problem


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address)) is None


def test_the_allow_list_reads_hosts_ports_ipv6_and_wildcards() -> None:
    rules = parse_allow_list(" Example.COM , 127.0.0.1:8080, [::1]:9000,*.docs.test:443,, ")
    assert rules == (
        HostRule("example.com"),
        HostRule("127.0.0.1", 8080),
        HostRule("::1", 9000),
        HostRule("docs.test", 443, wildcard=True),
    )
    assert parse_allow_list("") == ()


@pytest.mark.parametrize("entry", ["http://x/", "x/path", "a.*.b", "*", "user@x", "x:99999", ":80"])
def test_a_malformed_allow_list_entry_is_a_configuration_error(entry: str) -> None:
    with pytest.raises(ValueError, match="agent_http_allow_hosts"):
        parse_allow_list(entry)


RULES = parse_allow_list("example.com,127.0.0.1:8080,*.docs.test")


@pytest.mark.parametrize(
    ("url", "explicit"),
    [
        ("https://example.com/a?b=1", True),
        ("http://EXAMPLE.com.:81/", True),
        ("http://127.0.0.1:8080/x", True),
        ("https://api.docs.test/", False),
    ],
)
def test_listed_urls_pass_and_say_whether_listed_by_name(url: str, explicit: bool) -> None:
    assert check_url(url, RULES).explicit is explicit


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("ftp://example.com/", "only http and https"),
        ("file:///etc/passwd", "only http and https"),
        ("http://other.com/", "other.com:80 is not in the allow-list"),
        ("http://127.0.0.1:8081/", "127.0.0.1:8081 is not in the allow-list"),
        ("http://127.0.0.1/", "127.0.0.1:80 is not in the allow-list"),
        ("http://localhost:8080/", "localhost:8080 is not in the allow-list"),
        ("http://[::1]:8080/", r"\[::1\]:8080 is not in the allow-list"),
        ("http://docs.test/", "docs.test:80 is not in the allow-list"),
        ("http://evil-docs.test/", "is not in the allow-list"),
        ("http://user:pw@example.com/", "credentials"),
        ("http:///path", "no host"),
    ],
)
def test_unlisted_or_odd_urls_are_refused(url: str, words: str) -> None:
    with pytest.raises(Refused, match=words):
        check_url(url, RULES)


def test_a_wildcard_host_may_only_resolve_to_public_addresses() -> None:
    target = check_url("https://api.docs.test/", RULES)
    assert vet_addresses(target, ["93.184.216.34"]) == ["93.184.216.34"]
    with pytest.raises(Refused, match=r"resolves to 127\.0\.0\.1, a loopback address"):
        vet_addresses(target, ["93.184.216.34", "127.0.0.1"])
    with pytest.raises(Refused, match="did not resolve"):
        vet_addresses(target, [])


def test_a_host_listed_by_name_may_be_private() -> None:
    assert vet_addresses(check_url("http://127.0.0.1:8080/", RULES), ["127.0.0.1"]) == ["127.0.0.1"]
    assert vet_addresses(check_url("http://example.com/", RULES), ["10.0.0.5"]) == ["10.0.0.5"]
