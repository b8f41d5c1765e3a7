"""The outbound URL policy: hostile URLs are refused before any byte leaves, allowed ones work.

A real HTTP server on 127.0.0.1 records every request it gets, so "refused" means the hostile
URL never reached it, not merely that the client raised. Tests that must reach loopback
allow-list it explicitly.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from explainers.net import (
    AsyncPolicyTransport,
    OutboundDenied,
    OutboundPolicy,
    PolicyTransport,
    embedded_ipv4,
    parse_ip_literal,
)


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse can be observed
    hits: list[tuple[str, str]]
    redirect_to: dict[str, str]

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.hits.append((self.path, self.headers.get("Host", "")))  # type: ignore[attr-defined]
        target = self.server.redirect_to.get(self.path)  # type: ignore[attr-defined]
        if target:
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture()
def server() -> Iterator[ThreadingHTTPServer]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    srv.hits = []  # type: ignore[attr-defined]
    srv.redirect_to = {}  # type: ignore[attr-defined]
    t = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _port(srv: ThreadingHTTPServer) -> int:
    return srv.server_address[1]


# Every one of these points at something the service must never reach by default.
HOSTILE = [
    "http://127.0.0.1:{p}/",
    "http://localhost:{p}/",
    "http://LOCALHOST.:{p}/",
    "http://127.1:{p}/",  # short form
    "http://2130706433:{p}/",  # decimal
    "http://0x7f000001:{p}/",  # hex
    "http://0x7f.0.0.1:{p}/",  # hex octet
    "http://017700000001:{p}/",  # octal
    "http://[::1]:{p}/",
    "http://[::ffff:127.0.0.1]:{p}/",  # IPv4-mapped
    "http://[::ffff:7f00:1]:{p}/",  # IPv4-mapped, hex spelling
    "http://[0:0:0:0:0:ffff:169.254.169.254]/",  # mapped metadata
    "http://[::127.0.0.1]:{p}/",  # IPv4-compatible
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://0.0.0.0:{p}/",
    "http://[::]:{p}/",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata.google.internal./computeMetadata/v1/",
    "http://100.100.100.200/latest/meta-data/",  # Alibaba metadata
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # CGNAT
    "http://169.254.1.1/",  # link-local
    "http://[fe80::1]/",
    "http://[fc00::1]/",  # ULA
    "http://224.0.0.1/",  # multicast
    "http://[ff02::1]/",
    "http://240.0.0.1/",  # reserved
    "http://255.255.255.255/",
    "http://198.18.0.1/",  # benchmarking
    "http://%31%32%37.0.0.1:{p}/",  # percent-encoded host
    "file:///etc/passwd",
    "gopher://127.0.0.1:{p}/_GET",
    "ftp://example.com/",
    "http://user:pw@127.0.0.1:{p}/",
]


@pytest.mark.parametrize("template", HOSTILE)
def test_hostile_url_never_reaches_the_server(template: str, server: ThreadingHTTPServer) -> None:
    url = template.format(p=_port(server))
    with httpx.Client(transport=PolicyTransport(OutboundPolicy()), timeout=2.0) as client:
        with pytest.raises((OutboundDenied, httpx.UnsupportedProtocol, httpx.InvalidURL)):
            client.get(url)
    assert server.hits == []


def test_at_least_twenty_hostile_urls() -> None:
    assert len(HOSTILE) >= 20


@pytest.mark.parametrize(
    ("host", "ip"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("[::ffff:7f00:1]", "::ffff:7f00:1"),
        ("example.com", None),
    ],
)
def test_ip_literals_are_parsed_the_way_a_resolver_would(host: str, ip: str | None) -> None:
    got = parse_ip_literal(host)
    assert (str(got) if got else None) == ip


def test_embedded_ipv4_forms() -> None:
    import ipaddress

    found = {str(a) for a in embedded_ipv4(ipaddress.ip_address("::ffff:10.0.0.1"))}
    assert found == {"10.0.0.1"}
    assert "169.254.169.254" in {str(a) for a in embedded_ipv4(ipaddress.ip_address("64:ff9b::a9fe:a9fe"))}


def _fixed(answers: dict[str, list[str]], calls: list[str] | None = None):
    def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        return answers[host]

    return resolve


def test_name_resolving_to_private_address_is_denied() -> None:
    policy = OutboundPolicy(resolver=_fixed({"evil.example": ["10.1.2.3"]}))
    with pytest.raises(OutboundDenied, match="private"):
        policy.resolve("evil.example", 80)


def test_every_resolved_address_is_checked() -> None:
    policy = OutboundPolicy(resolver=_fixed({"mixed.example": ["93.184.216.34", "127.0.0.1"]}))
    with pytest.raises(OutboundDenied, match="loopback"):
        policy.resolve("mixed.example", 80)


def test_public_address_is_allowed_without_allow_list() -> None:
    policy = OutboundPolicy(resolver=_fixed({"api.example": ["93.184.216.34", "2606:2800:220:1::1"]}))
    assert str(policy.resolve("api.example", 443)) == "93.184.216.34"
    assert policy.check_url("https://api.example/v1") == ("api.example", None)


def test_allow_listed_loopback_reaches_the_server(server: ThreadingHTTPServer) -> None:
    policy = OutboundPolicy.from_allow("127.0.0.1/32")
    with httpx.Client(transport=PolicyTransport(policy), timeout=5.0) as client:
        r = client.get(f"http://127.0.0.1:{_port(server)}/ping")
    assert r.json() == {"ok": True}
    assert server.hits == [("/ping", f"127.0.0.1:{_port(server)}")]


def test_allow_listed_name_keeps_host_header_and_pins_the_checked_ip(server: ThreadingHTTPServer) -> None:
    calls: list[str] = []
    policy = OutboundPolicy(
        allow=("model.internal",), resolver=_fixed({"model.internal": ["127.0.0.1"]}, calls)
    )
    transport = PolicyTransport(policy)
    with httpx.Client(transport=transport, timeout=5.0) as client:
        r = client.get(f"http://model.internal:{_port(server)}/x")
    assert r.status_code == 200
    assert server.hits == [("/x", f"model.internal:{_port(server)}")]
    assert calls == ["model.internal"]  # resolved once for the connection
    assert transport._backend.last_peer == "127.0.0.1"


def test_allow_list_does_not_open_cloud_metadata() -> None:
    policy = OutboundPolicy.from_allow(["169.254.0.0/16", "metadata.internal"])
    with pytest.raises(OutboundDenied, match="metadata"):
        policy.check_url("http://169.254.169.254/")
    assert policy.check_url("http://169.254.10.10/")[0] == "169.254.10.10"


def test_dns_rebinding_cannot_switch_the_target(server: ThreadingHTTPServer) -> None:
    """First lookup says loopback (allowed), the next says metadata: each connection is checked
    on its own lookup, and the socket goes to the address that lookup returned."""
    answers = iter([["127.0.0.1"], ["169.254.169.254"]])
    calls: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers)

    policy = OutboundPolicy(allow=("127.0.0.1/32",), resolver=rebinding)
    with httpx.Client(transport=PolicyTransport(policy), timeout=5.0) as client:
        assert client.get(f"http://rebind.example:{_port(server)}/a").status_code == 200
        # Keep-alive reuses the pinned connection: no second lookup, same checked peer.
        assert client.get(f"http://rebind.example:{_port(server)}/b").status_code == 200
    assert calls == ["rebind.example"]
    with httpx.Client(transport=PolicyTransport(policy), timeout=5.0) as client:
        with pytest.raises(OutboundDenied, match="metadata"):
            client.get(f"http://rebind.example:{_port(server)}/c")
    assert [h[0] for h in server.hits] == ["/a", "/b"]


def test_redirect_to_denied_target_is_not_followed(server: ThreadingHTTPServer) -> None:
    port = _port(server)
    server.redirect_to.update(
        {
            "/meta": "http://169.254.169.254/latest/meta-data/iam",
            "/other-loopback": f"http://127.0.0.2:{port}/secret",
            "/private": "http://10.0.0.7/admin",
            "/ok": f"http://127.0.0.1:{port}/landed",
        }
    )
    policy = OutboundPolicy.from_allow("127.0.0.1/32")
    with httpx.Client(transport=PolicyTransport(policy), follow_redirects=True, timeout=5.0) as client:
        for path in ("/meta", "/other-loopback", "/private"):
            with pytest.raises(OutboundDenied):
                client.get(f"http://127.0.0.1:{port}{path}")
        assert client.get(f"http://127.0.0.1:{port}/ok").json() == {"ok": True}
    assert [h[0] for h in server.hits] == ["/meta", "/other-loopback", "/private", "/ok", "/landed"]


def test_schemes_are_allow_listed() -> None:
    policy = OutboundPolicy(schemes=frozenset({"https"}))
    with pytest.raises(OutboundDenied, match="scheme"):
        policy.check_url("http://93.184.216.34/")
    assert policy.check_url("https://93.184.216.34/")[0] == "93.184.216.34"


def test_async_transport_enforces_the_same_policy(server: ThreadingHTTPServer) -> None:
    import asyncio

    port = _port(server)

    async def go() -> tuple[int, bool]:
        denied = False
        async with httpx.AsyncClient(transport=AsyncPolicyTransport(OutboundPolicy()), timeout=5.0) as c:
            try:
                await c.get(f"http://127.0.0.1:{port}/no")
            except OutboundDenied:
                denied = True
        policy = OutboundPolicy.from_allow("127.0.0.1")
        async with httpx.AsyncClient(transport=AsyncPolicyTransport(policy), timeout=5.0) as c:
            r = await c.get(f"http://127.0.0.1:{port}/yes")
        return r.status_code, denied

    status, denied = asyncio.run(go())
    assert (status, denied) == (200, True)
    assert [h[0] for h in server.hits] == ["/yes"]


@pytest.mark.skipif(
    shutil.which("openssl") is None, reason="needs the openssl command to make a test certificate"
)
def test_https_keeps_sni_and_certificate_check_for_the_original_name(tmp_path: Path) -> None:
    """The socket goes to the pinned IP, but TLS still verifies the certificate for the URL's name."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=model.internal",
            "-addext",
            "subjectAltName=DNS:model.internal",
        ],
        check=True,
        capture_output=True,
    )
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    srv.hits = []  # type: ignore[attr-defined]
    srv.redirect_to = {}  # type: ignore[attr-defined]
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(cert, key)
    srv.socket = sctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    port = srv.server_address[1]
    try:
        cctx = ssl.create_default_context(cafile=str(cert))
        good = OutboundPolicy(
            allow=("127.0.0.1/32",),
            resolver=_fixed({"model.internal": ["127.0.0.1"], "other.internal": ["127.0.0.1"]}),
        )
        with httpx.Client(transport=PolicyTransport(good, verify=cctx), timeout=5.0) as client:
            assert client.get(f"https://model.internal:{port}/tls").json() == {"ok": True}
        with httpx.Client(transport=PolicyTransport(good, verify=cctx), timeout=5.0) as client:
            with pytest.raises(httpx.ConnectError):  # certificate is not for other.internal
                client.get(f"https://other.internal:{port}/tls")
        assert srv.hits == [("/tls", f"model.internal:{port}")]
    finally:
        srv.shutdown()
        srv.server_close()
