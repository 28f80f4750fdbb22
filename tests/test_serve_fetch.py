"""URL inputs: only public addresses (or explicitly allowed networks), checked before connecting."""

from __future__ import annotations

import asyncio
import time

import pytest
from serve_helpers import image_server, loopback_only, png_bytes

from swinkit.serve.fetch import AddressPolicy, Fetcher, FetchError

IMAGE = png_bytes()
LOOPBACK = ["127.0.0.1/32"]


@pytest.fixture(scope="module")
def server():
    with image_server(IMAGE) as url:
        yield url


@pytest.fixture(autouse=True)
def connections():
    with loopback_only() as connected:
        yield connected


def stub_resolver(table: dict[str, list[str]], calls: list[str] | None = None):
    async def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise OSError(f"unknown host {host}")
        return table[host]

    return resolve


def fetch(url: str, **kwargs) -> bytes:
    async def go() -> bytes:
        fetcher = Fetcher(AddressPolicy(kwargs.pop("allowed", LOOPBACK)), **kwargs)
        try:
            return await fetcher.fetch(url)
        finally:
            await fetcher.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize(
    "address",
    ["10.0.0.5", "172.16.3.4", "192.168.1.1", "127.0.0.1", "169.254.169.254", "0.0.0.0", "100.64.0.1",
     "224.0.0.1", "::1", "fe80::1%eth0", "fc00::1", "::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:a00:1::"],
)  # fmt: skip
def test_non_public_addresses_are_refused(address):
    assert not AddressPolicy().allows(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "151.101.1.69", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address):
    assert AddressPolicy().allows(address)


def test_allowed_networks_open_exactly_those_networks():
    policy = AddressPolicy(["127.0.0.1/32", "10.1.0.0/16"])
    assert policy.allows("127.0.0.1") and policy.allows("10.1.200.3") and policy.allows("::ffff:10.1.0.9")
    assert not policy.allows("127.0.0.2") and not policy.allows("10.2.0.1")


def test_fetches_an_image_from_an_allowed_network(server):
    assert fetch(f"{server}/image.png") == IMAGE


@pytest.mark.parametrize("address", ["10.0.0.5", "169.254.169.254", "192.168.1.1"])
def test_host_resolving_to_a_private_address_is_refused_before_connecting(server, connections, address):
    resolver = stub_resolver({"evil.example": [address]})
    with pytest.raises(FetchError, match="non-public") as info:
        fetch("http://evil.example/image.png", resolver=resolver)
    assert info.value.code == "url_forbidden" and connections == []


def test_host_with_any_private_address_is_refused(connections):
    resolver = stub_resolver({"mixed.example": ["93.184.216.34", "10.0.0.5"]})
    with pytest.raises(FetchError, match="10.0.0.5"):
        fetch("http://mixed.example/", resolver=resolver)
    assert connections == []


def test_loopback_is_refused_unless_allowed(server, connections):
    with pytest.raises(FetchError) as info:
        fetch(f"{server}/image.png", allowed=[])
    assert info.value.code == "url_forbidden" and connections == []


def test_connects_to_the_checked_address_with_the_original_host(server, connections):
    calls: list[str] = []
    port = server.rsplit(":", 1)[1]
    resolver = stub_resolver({"images.test": ["127.0.0.1"]}, calls)
    assert fetch(f"http://images.test:{port}/host", resolver=resolver) == f"images.test:{port}".encode()
    assert calls == ["images.test"] and connections == [
        "127.0.0.1"
    ]  # resolved once, pinned to the checked IP


def test_redirects_are_followed_and_rechecked(server, connections):
    assert fetch(f"{server}/redirect?/image.png") == IMAGE
    connections.clear()
    resolver = stub_resolver({"evil.example": ["169.254.169.254"]})
    with pytest.raises(FetchError, match="non-public"):
        fetch(f"{server}/redirect?http://evil.example/latest/meta-data", resolver=resolver)
    assert connections == ["127.0.0.1"]  # only the first hop


@pytest.mark.parametrize(
    ("path", "code"),
    [("/loop", "url_too_many_redirects"), ("/redirect?ftp://127.0.0.1/x", "unsupported_scheme"),
     ("/missing", "url_fetch_failed"), ("/huge-declared", "url_too_large"), ("/huge", "url_too_large")],
)  # fmt: skip
def test_bad_downloads_are_refused(server, path, code):
    with pytest.raises(FetchError) as info:
        fetch(f"{server}{path}", max_bytes=100_000)
    assert info.value.code == code
    assert info.value.status == (413 if code == "url_too_large" else 400)


def test_slow_download_hits_the_deadline(server):
    start = time.perf_counter()
    with pytest.raises(FetchError) as info:
        fetch(f"{server}/slow", timeout_s=1.0)
    assert info.value.code == "url_timeout" and time.perf_counter() - start < 3


def test_unresolvable_host():
    with pytest.raises(FetchError) as info:
        fetch("http://nowhere.test/", resolver=stub_resolver({}))
    assert info.value.code == "url_unresolvable"


@pytest.mark.parametrize("port", [65536, 99999])
def test_out_of_range_ports_are_a_client_error(port, connections):
    with pytest.raises(FetchError) as info:
        fetch(f"http://127.0.0.1:{port}/x")
    assert info.value.code in ("invalid_url", "url_fetch_failed") and info.value.status == 400
