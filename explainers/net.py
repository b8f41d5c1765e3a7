"""Outbound URL policy: the SSRF guard for every URL a user can make this library call.

Users hand the service classifier endpoints and LLM base URLs. Without a guard those URLs reach
whatever the service can reach: the cluster's private network, the node's loopback, the cloud
metadata service. `OutboundPolicy` decides which targets are allowed; `PolicyTransport` enforces
it inside httpx at connection time:

* the scheme must be listed (http/https by default);
* the host must be a well-formed DNS name or an IP literal; legacy IPv4 spellings that
  `inet_aton` accepts (decimal ``2130706433``, hex ``0x7f.1``, octal ``0177.0.0.1``, short
  ``127.1``) are parsed as the addresses they mean, never passed to a resolver to guess;
* the host is resolved ONCE per connection, every resolved address is checked, and the socket
  connects to the checked address itself (a custom httpcore network backend), so a DNS
  rebinding answer on a second lookup can never switch the target. TLS keeps the original host
  for SNI and certificate checks because httpcore passes the URL host as ``server_hostname``;
* every request passes through the transport, so when a client follows redirects each hop is
  checked like the first (adapters should not follow redirects at all).

Denied by default: loopback, private (RFC 1918, ULA), link-local, CGNAT (100.64/10),
multicast, reserved, unspecified, benchmarking and documentation ranges, cloud metadata
(169.254.169.254, fd00:ec2::254, metadata.google.internal, ...), and IPv6 forms that embed
an IPv4 address (IPv4-mapped, IPv4-compatible, 6to4, Teredo, NAT64) when the embedded address
is denied. An allow-list of host names and CIDRs opens specific targets (tests allow-list
loopback explicitly; a cluster deployment allow-lists its model server's service CIDR).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

from explainers.errors import OutboundDenied
from explainers.outbound import DeadlineBackend, GuardedTransport, install_backend

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]

# Names that always point at an instance metadata service, whatever DNS says.
METADATA_HOSTS = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
    }
)
METADATA_IPS = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "169.254.169.253", "fd00:ec2::254", "100.100.100.200")
)
# Ranges that `ipaddress.is_global` does not flag but no classifier endpoint should live in.
_EXTRA_DENIED = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "100.64.0.0/10",
        "192.0.0.0/24",
        "198.18.0.0/15",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/96",  # IPv4-compatible (deprecated) and unspecified
        "ff00::/8",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
    )
)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_HOSTNAME = re.compile(r"^(?=.{1,253}$)(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*$")


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address `host` spells, if it is an IP literal in any form a resolver would accept.

    Standard forms go through `ipaddress`; the legacy IPv4 forms (decimal, hex, octal, fewer
    than four parts) go through `inet_aton`, which is exactly what glibc's resolver would do
    with them, so the policy sees the same address the socket would.
    """
    h = host.strip("[]")
    try:
        return ipaddress.ip_address(h.split("%", 1)[0] if ":" in h else h)
    except ValueError:
        pass
    if re.fullmatch(r"(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}", h, flags=re.IGNORECASE):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(h))
        except OSError:
            raise OutboundDenied(f"malformed IP address {host!r}") from None
    return None


def embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (mapped, compatible, 6to4, Teredo, NAT64)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    packed = ip.packed
    if packed[:12] == bytes(12) and int(ip) > 1:  # ::a.b.c.d (IPv4-compatible)
        found.append(ipaddress.IPv4Address(packed[12:]))
    if any(ip in n for n in _NAT64):
        found.append(ipaddress.IPv4Address(packed[12:]))
    return found


AllowedName = tuple[str, "int | None"]
AllowedNet = tuple[IPNetwork, "int | None"]


def _split_port(entry: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `a.b.c.d/n:port` or `[v6 or v6/n]:port` -> (host or network, port or None)."""
    if entry.startswith("["):
        inner, _, rest = entry[1:].partition("]")
        if not rest:
            return inner, None
        if not (rest.startswith(":") and rest[1:].isdigit()):
            raise ValueError(f"allow-list entry {entry!r}: expected [address]:port")
        port = int(rest[1:])
    elif entry.count(":") == 1:
        entry, _, p = entry.partition(":")
        if not p.isdigit():
            raise ValueError(f"allow-list entry {entry!r}: the port must be a number")
        inner, port = entry, int(p)
    else:
        return entry, None
    if not 0 < port < 65536:
        raise ValueError(f"allow-list entry {entry!r}: port {port} is out of range")
    return inner, port


def _parse_allow(entries: Iterable[str]) -> tuple[tuple[AllowedName, ...], tuple[AllowedNet, ...]]:
    """Host names and networks, each with the one port it opens (None: every port)."""
    names: list[AllowedName] = []
    nets: list[AllowedNet] = []
    for raw in entries:
        e = raw.strip().lower().rstrip(".")
        if not e:
            continue
        target, port = _split_port(e)
        try:
            nets.append((ipaddress.ip_network(target.strip("[]"), strict=False), port))
        except ValueError:
            names.append((target.rstrip("."), port))
    return tuple(names), tuple(nets)


def _default_port(u: httpx.URL) -> int | None:
    return u.port or {"http": 80, "https": 443}.get(u.scheme)


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class OutboundPolicy:
    """Which outbound targets are allowed. Deny-by-default for everything that is not public.

    `allow` takes host names (``models.internal``; ``*.svc.cluster.local`` for a suffix) and
    IPs/CIDRs (``127.0.0.1/32``, ``10.42.0.0/16``), each optionally with the one port it opens
    (``models.internal:8080``, ``127.0.0.1/32:8301``, ``[fd00::/8]:443``); without a port an
    entry opens every port of its targets. An allow-listed name opens every address it
    resolves to; an allow-listed network opens its addresses for any name. Cloud metadata
    addresses stay denied unless their exact network is allow-listed.
    """

    allow: tuple[str, ...] = ()
    schemes: frozenset[str] = frozenset({"http", "https"})
    resolver: Resolver = field(default=_system_resolver, compare=False, repr=False)

    def __post_init__(self) -> None:
        names, nets = _parse_allow(self.allow)
        object.__setattr__(self, "_names", names)
        object.__setattr__(self, "_nets", nets)

    @classmethod
    def from_allow(cls, allow: Iterable[str] | str | None, **kwargs: Any) -> OutboundPolicy:
        """Build from settings: a list or a comma-separated string (``CACE_OUTBOUND_ALLOW``)."""
        if isinstance(allow, str):
            allow = allow.split(",")
        return cls(allow=tuple(a.strip() for a in (allow or ()) if a.strip()), **kwargs)

    # --- decisions -------------------------------------------------------------------------
    def host_allowed(self, host: str, port: int | None = None) -> bool:
        """Whether `host` is allow-listed by name (for `port`, when the entry names one)."""
        h = host.lower().rstrip(".")
        names: tuple[AllowedName, ...] = self._names  # type: ignore[attr-defined]
        return any(
            (h == n or (n.startswith("*.") and h.endswith(n[1:]))) and (p is None or p == port)
            for n, p in names
        )

    def ip_denial(self, ip: IPAddress, *, host_allowed: bool = False, port: int | None = None) -> str | None:
        """Why `ip` is denied (on `port`, when allow-list entries name ports), or None when it may be reached."""
        nets = [n for n, p in self._nets if p is None or p == port]  # type: ignore[attr-defined]
        if any(ip.version == n.version and ip in n for n in nets):
            if ip not in METADATA_IPS or any(n.num_addresses == 1 and ip in n for n in nets):
                return None
        if ip in METADATA_IPS:
            return f"{ip} is a cloud metadata address"
        if host_allowed:
            return None
        for v4 in embedded_ipv4(ip):
            reason = self.ip_denial(v4, port=port)
            if reason:
                return f"{ip} embeds {v4}: {reason}"
        if ip.is_loopback:
            return f"{ip} is loopback"
        if ip.is_link_local:
            return f"{ip} is link-local"
        if ip.is_multicast:
            return f"{ip} is multicast"
        if ip.is_unspecified:
            return f"{ip} is unspecified"
        if ip.is_private:
            return f"{ip} is private"
        if ip.is_reserved or any(ip.version == n.version and ip in n for n in _EXTRA_DENIED):
            return f"{ip} is in a reserved or special-purpose range"
        if not ip.is_global:
            return f"{ip} is not a global address"
        return None

    def check_url(self, url: httpx.URL | str) -> tuple[str, IPAddress | None]:
        """Check scheme and host syntax; return (normalised host, its IP if it is a literal).

        Raises `OutboundDenied`. Call this when a URL is registered, to refuse it up front;
        `PolicyTransport` calls it again on every request.
        """
        try:
            u = httpx.URL(url) if isinstance(url, str) else url
        except (httpx.InvalidURL, ValueError) as e:
            raise OutboundDenied(f"invalid URL: {e}") from None
        if u.scheme not in self.schemes:
            raise OutboundDenied(f"scheme {u.scheme!r} is not allowed (allowed: {sorted(self.schemes)})")
        host = u.host.lower()
        if not host:
            raise OutboundDenied("URL has no host")
        port = _default_port(u)
        ip = parse_ip_literal(host)
        if ip is not None:
            reason = self.ip_denial(ip, host_allowed=self.host_allowed(str(ip), port), port=port)
            if reason:
                raise OutboundDenied(f"{url}: {reason}")
            return str(ip), ip
        bare = host.rstrip(".")
        if not _HOSTNAME.match(bare):
            raise OutboundDenied(f"host {host!r} is not a valid DNS name")
        if bare in METADATA_HOSTS and not any(bare == n for n, _ in self._names):  # type: ignore[attr-defined]
            raise OutboundDenied(f"host {host!r} is a cloud metadata endpoint")
        if bare == "localhost" or bare.endswith(".localhost"):  # RFC 6761: always loopback
            reason = self.ip_denial(
                ipaddress.IPv4Address("127.0.0.1"), host_allowed=self.host_allowed(bare, port), port=port
            )
            if reason:
                raise OutboundDenied(f"host {host!r}: {reason}")
        return bare, None

    def resolve(self, host: str, port: int) -> IPAddress:
        """Resolve `host` once, check every address, return the one to connect to.

        All addresses must pass: a name that resolves to one public and one private address is
        refused, since the caller cannot know which one a later lookup would pick.
        """
        ip = parse_ip_literal(host)
        allowed_name = self.host_allowed(host, port)
        if ip is not None:
            addrs = [ip]
        else:
            try:
                addrs = [ipaddress.ip_address(a.split("%", 1)[0]) for a in self.resolver(host, port)]
            except OSError as e:
                raise httpx.ConnectError(f"cannot resolve {host!r}: {e}") from e
            if not addrs:
                raise httpx.ConnectError(f"{host!r} resolved to no address")
        for a in addrs:
            reason = self.ip_denial(a, host_allowed=allowed_name, port=port)
            if reason:
                raise OutboundDenied(f"{host} resolves to a denied address: {reason}")
        return addrs[0]


class _PinnedBackend(DeadlineBackend):
    """Resolves through the policy and connects to exactly the address it checked.

    A `DeadlineBackend`: every socket operation on the connection also ends by the outbound
    call's wall-clock deadline (`explainers.outbound`).
    """

    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy
        self.last_peer: str | None = None

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        ip = self.policy.resolve(host, port)
        self.last_peer = str(ip)
        return super().connect_tcp(str(ip), port, timeout, local_address, socket_options)


class _AsyncPinnedBackend(httpcore.AnyIOBackend):
    def __init__(self, policy: OutboundPolicy) -> None:
        self.policy = policy

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        import anyio.to_thread

        ip = await anyio.to_thread.run_sync(self.policy.resolve, host, port)
        return await super().connect_tcp(str(ip), port, timeout, local_address, socket_options)


# Called after every outbound request: (request, seconds, response or None, error or None).
# The service hangs its metrics here; the library never imports a metrics package.
Observer = Callable[[httpx.Request, float, "httpx.Response | None", "BaseException | None"], None]


def _notify(
    observers: Sequence[Observer],
    request: httpx.Request,
    seconds: float,
    response: httpx.Response | None,
    error: BaseException | None,
) -> None:
    for fn in observers:
        try:
            fn(request, seconds, response, error)
        except Exception:  # an observer must never break the call it observes
            pass


class PolicyTransport(GuardedTransport):
    """An httpx transport that enforces an `OutboundPolicy` on every request and connection.

    Use as ``httpx.Client(transport=PolicyTransport(policy))``. Proxies are not supported: a
    proxy would make the policy check the proxy's address instead of the target's. Functions
    appended to `observers` see every request's outcome and latency (denials included). A
    `GuardedTransport`: wall-clock deadline per attempt and `max_response_bytes` per response.
    """

    def __init__(self, policy: OutboundPolicy | None = None, **kwargs: Any) -> None:
        if kwargs.get("proxy") is not None:
            raise ValueError("PolicyTransport does not support proxies")
        self.policy = policy or OutboundPolicy()
        self.observers: list[Observer] = []
        self._backend = _PinnedBackend(self.policy)
        super().__init__(**kwargs)

    def _network_backend(self) -> httpcore.NetworkBackend:
        return self._backend

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        started = time.perf_counter()
        try:
            try:
                self.policy.check_url(request.url)
            except OutboundDenied as e:
                raise OutboundDenied(str(e), request=request) from None
            response = super().handle_request(request)
        except BaseException as e:
            _notify(self.observers, request, time.perf_counter() - started, None, e)
            raise
        _notify(self.observers, request, time.perf_counter() - started, response, None)
        return response


class AsyncPolicyTransport(httpx.AsyncHTTPTransport):
    """The async twin of `PolicyTransport` for ``httpx.AsyncClient``."""

    def __init__(self, policy: OutboundPolicy | None = None, **kwargs: Any) -> None:
        if kwargs.get("proxy") is not None:
            raise ValueError("AsyncPolicyTransport does not support proxies")
        super().__init__(**kwargs)
        self.policy = policy or OutboundPolicy()
        install_backend(self, _AsyncPinnedBackend(self.policy))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            self.policy.check_url(request.url)
        except OutboundDenied as e:
            raise OutboundDenied(str(e), request=request) from None
        return await super().handle_async_request(request)
