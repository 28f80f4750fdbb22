"""Downloading URL inputs without letting the endpoint be turned against the network it runs in.

Every TCP connection, the first and each redirect's, goes through ``GuardedBackend``: the host name is
resolved once, every address it resolves to must be public (or inside an explicitly allowed network),
and the connection is made to that checked address, so a second DNS answer cannot redirect it (DNS
rebinding). TLS still verifies the certificate against the host name. Only http and https are fetched,
redirects are followed by hand (each re-checked), the whole download has one deadline and the body is
streamed and cut off at a size cap. Proxy environment variables are ignored.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

import anyio
import httpcore
import httpx

Resolver = Callable[[str, int], Awaitable[list[str]]]
Network = IPv4Network | IPv6Network
_NAT64 = IPv6Network("64:ff9b::/96")


class FetchError(ValueError):
    """A URL input that cannot be used; ``code`` and ``status`` are what the endpoint answers."""

    def __init__(self, message: str, code: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, by the operating system's resolver."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _embedded_ipv4(ip: IPv6Address) -> IPv4Address | None:
    """The IPv4 address carried by an IPv4-mapped, 6to4 or NAT64 IPv6 address."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


class AddressPolicy:
    """Which addresses URL inputs may reach: public unicast ones, plus any in ``allowed_networks``."""

    def __init__(self, allowed_networks: Iterable[Network | str] = ()) -> None:
        self.allowed_networks = tuple(ipaddress.ip_network(n) for n in allowed_networks)

    def allows(self, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
        candidates = [ip]
        if isinstance(ip, IPv6Address) and (embedded := _embedded_ipv4(ip)) is not None:
            candidates.append(embedded)
        if any(c in net for c in candidates for net in self.allowed_networks if c.version == net.version):
            return True
        return all(c.is_global and not c.is_multicast for c in candidates)

    async def resolve(self, host: str, port: int, resolver: Resolver) -> str:
        """The address to connect to for ``host``; FetchError if any address it resolves to is refused."""
        try:
            addresses = [str(ipaddress.ip_address(host.strip("[]")))]
        except ValueError:
            try:
                addresses = await resolver(host, port)
            except OSError as e:
                raise FetchError(f"cannot resolve {host}: {e}", "url_unresolvable") from None
        if not addresses:
            raise FetchError(f"cannot resolve {host}", "url_unresolvable")
        refused = [a for a in addresses if not self.allows(a)]
        if refused:
            raise FetchError(
                f"{host} resolves to a non-public address ({refused[0]}); refused", "url_forbidden"
            )
        return addresses[0]


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses the policy allows."""

    def __init__(self, policy: AddressPolicy, resolver: Resolver = system_resolver) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address = await self._policy.resolve(host, port, self._resolver)
        return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise FetchError("unix sockets are never fetched", "url_forbidden")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with its connection pool on a ``GuardedBackend``."""

    def __init__(self, backend: GuardedBackend) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False), network_backend=backend, max_connections=64
        )


class Fetcher:
    """Downloads image URLs under the policy: deadline ``timeout_s``, at most ``max_bytes`` and ``max_redirects``."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        resolver: Resolver = system_resolver,
        timeout_s: float = 10.0,
        max_bytes: int = 10 * 1024 * 1024,
        max_redirects: int = 3,
    ) -> None:
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self._client = httpx.AsyncClient(
            transport=_GuardedTransport(GuardedBackend(policy, resolver)),
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(timeout_s),
            headers={"User-Agent": "swinkit-serve", "Accept": "image/*", "Accept-Encoding": "identity"},
        )

    async def fetch(self, url: str) -> bytes:
        """The body of ``url``; FetchError for a refused, failed, slow or oversized download."""
        try:
            with anyio.fail_after(self.timeout_s):
                return await self._follow(url)
        except (TimeoutError, httpx.TimeoutException):
            raise FetchError(
                f"downloading {url} took longer than {self.timeout_s:g} s", "url_timeout"
            ) from None
        except httpx.InvalidURL as e:
            raise FetchError(f"{url} is not a valid URL ({e})", "invalid_url") from None
        except FetchError:
            raise
        except Exception as e:  # whatever a hostile URL or server makes the client trip on is the client's
            raise FetchError(
                f"downloading {url} failed ({type(e).__name__}: {e})", "url_fetch_failed"
            ) from None

    async def _follow(self, url: str) -> bytes:
        current = httpx.URL(url)
        for _ in range(self.max_redirects + 1):
            if current.scheme not in ("http", "https"):
                raise FetchError(f"{current} is not an http(s) URL", "unsupported_scheme")
            if current.port is not None and not 0 < current.port < 65536:
                raise FetchError(f"{current} has no valid port", "invalid_url")
            async with self._client.stream("GET", current) as response:
                if response.is_redirect and "location" in response.headers:
                    current = current.join(response.headers["location"])
                    continue
                if response.status_code != 200:
                    raise FetchError(f"{current} answered HTTP {response.status_code}", "url_fetch_failed")
                return await self._read_capped(response)
        raise FetchError(f"{url} redirects more than {self.max_redirects} times", "url_too_many_redirects")

    async def _read_capped(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise FetchError(
                f"{response.url} is {declared} bytes, over {self.max_bytes}", "url_too_large", 413
            )
        chunks: list[bytes] = []
        received = 0
        async for chunk in response.aiter_raw():
            received += len(chunk)
            if received > self.max_bytes:
                raise FetchError(f"{response.url} is over {self.max_bytes} bytes", "url_too_large", 413)
            chunks.append(chunk)
        return b"".join(chunks)

    async def aclose(self) -> None:
        await self._client.aclose()
