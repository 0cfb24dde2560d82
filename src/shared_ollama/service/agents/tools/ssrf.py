"""The ``http_get`` tool's guard against server-side request forgery: which URLs the allow-list admits and which
resolved addresses may be connected to. Pure functions, no I/O."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from yarl import URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class Refused(Exception):
    """A URL or an address the guard will not let the tool reach; the message says why, for the model."""


@dataclass(frozen=True, slots=True)
class HostRule:
    """One allow-list entry: an exact host, or ``*.domain`` (any name under the domain), with an optional port."""

    host: str
    port: int | None = None
    wildcard: bool = False

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host


@dataclass(frozen=True, slots=True)
class Target:
    """A URL the allow-list admits: where to connect, and whether its host is listed exactly."""

    url: URL
    host: str
    port: int
    explicit: bool
    """The host (and port) is listed by name, not only through a ``*.domain`` rule: it may be a private address."""


def normalise_host(host: str) -> str:
    """Lower case, no trailing dot, an IP literal in its canonical form (``::1``, not ``0:0::1``)."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def parse_allow_list(text: str) -> tuple[HostRule, ...]:
    """``host``, ``host:port``, ``[v6]:port``, ``*.domain`` or ``*.domain:port``, comma-separated. A malformed
    entry is a ValueError naming it (a configuration error, found at start-up)."""
    rules: list[HostRule] = []
    for raw in text.split(","):
        entry = raw.strip()
        if not entry:
            continue
        try:
            parsed = URL(f"http://{entry}")
            host, explicit_port = parsed.raw_host, parsed.explicit_port
        except ValueError as exc:
            raise ValueError(f"agent_http_allow_hosts: malformed entry '{entry}' ({exc})") from exc
        if not host or parsed.raw_path not in ("", "/") or parsed.raw_query_string or parsed.user is not None:
            raise ValueError(f"agent_http_allow_hosts: '{entry}' must be host, host:port or *.domain[:port]")
        wildcard = host.startswith("*.")
        name = normalise_host(host[2:] if wildcard else host)
        if "*" in name or not name:
            raise ValueError(f"agent_http_allow_hosts: '{entry}': a wildcard may only be a leading '*.'")
        rules.append(HostRule(name, explicit_port, wildcard))
    return tuple(rules)


def check_url(url: str | URL, rules: tuple[HostRule, ...]) -> Target:
    """The target of ``url`` when the allow-list admits it; otherwise ``Refused`` saying why."""
    try:
        parsed = url if isinstance(url, URL) else URL(url)
    except (ValueError, TypeError) as exc:
        raise Refused(f"not a valid URL: {exc}") from exc
    if parsed.scheme not in ("http", "https"):
        raise Refused(f"only http and https URLs can be fetched, not '{parsed.scheme or url}'")
    if not parsed.raw_host:
        raise Refused("the URL has no host")
    if parsed.user is not None or parsed.password is not None:
        raise Refused("URLs with credentials are not allowed")
    host = normalise_host(parsed.raw_host)
    port = parsed.port
    if port is None:
        raise Refused("the URL has no port")
    matched = [rule for rule in rules if rule.matches(host, port)]
    if not matched:
        shown = f"[{host}]" if ":" in host else host
        raise Refused(f"host {shown}:{port} is not in the allow-list of this service")
    return Target(parsed, host, port, explicit=any(not rule.wildcard for rule in matched))


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (IPv4-mapped, 6to4, NAT64 well-known prefix), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_problem(address: IPAddress) -> str | None:
    """Why the tool may not connect to ``address`` unless its host is listed exactly (None: a public address)."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = embedded_ipv4(address)
        if inner is not None:
            problem = address_problem(inner)
            return f"{problem} (inside an IPv6 address)" if problem else None
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "not a public address"
    return None


def vet_addresses(target: Target, addresses: list[str]) -> list[str]:
    """The addresses the tool may connect to for ``target``: all of them when the host is listed exactly; else
    ``Refused`` if any one is not public (a name that also points inside is not fetched at all)."""
    if not addresses:
        raise Refused(f"host {target.host} did not resolve")
    vetted: list[str] = []
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        problem = None if target.explicit else address_problem(address)
        if problem:
            raise Refused(f"host {target.host} resolves to {address}, {problem}; only hosts listed by name may")
        vetted.append(str(address) if "%" not in text else text)
    return vetted
