"""Service ClusterIP and NodePort allocation."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AllocationError(Exception):
    """An address or port could not be allocated (rendered as 422 by the caller)."""


class IPPool:
    """One service CIDR; hands out addresses in order, skipping reserved ones.

    The network address (and, for IPv4, the broadcast address) are never used.
    `reserved` addresses are only given out when requested explicitly.
    """

    def __init__(self, cidr: str, reserved: Iterable[str] = ()) -> None:
        self.network: IPNetwork = ipaddress.ip_network(cidr)
        self.family = "IPv4" if self.network.version == 4 else "IPv6"
        self.reserved = {ipaddress.ip_address(r) for r in reserved}
        self.used: dict[IPAddress, str] = {}
        self._next = 1

    def contains(self, ip: IPAddress) -> bool:
        """Whether `ip` is an allocatable address of this range."""
        if ip.version != self.network.version or ip not in self.network:
            return False
        if ip == self.network.network_address:
            return False
        return not (self.network.version == 4 and ip == self.network.broadcast_address)

    def reserve(self, ip_text: str, owner: str) -> str:
        """Claim an explicit address for `owner`; returns its canonical text."""
        try:
            ip = ipaddress.ip_address(ip_text)
        except ValueError as exc:
            raise AllocationError(
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
            ) from exc
        if not self.contains(ip):
            raise AllocationError(
                f"failed to allocate IP {ip_text}: the provided IP ({ip_text}) is not in the "
                f"valid range. The range of valid IPs is {self.network}"
            )
        holder = self.used.get(ip)
        if holder is not None and holder != owner:
            raise AllocationError(
                f"failed to allocate IP {ip_text}: provided IP is already allocated"
            )
        self.used[ip] = owner
        return str(ip)

    def allocate(self, owner: str) -> str:
        """Pick the next free, non-reserved address for `owner`."""
        size = self.network.num_addresses
        for _ in range(min(size, 1 << 20)):
            offset = self._next
            self._next = self._next + 1 if self._next + 1 < size else 1
            ip = self.network.network_address + offset
            if ip in self.reserved or ip in self.used or not self.contains(ip):
                continue
            self.used[ip] = owner
            return str(ip)
        raise AllocationError(f"failed to allocate a serviceIP: range {self.network} is full")

    def release(self, ip_text: str, owner: str) -> None:
        """Free `ip_text` if `owner` holds it."""
        try:
            ip = ipaddress.ip_address(ip_text)
        except ValueError:
            return
        if self.used.get(ip) == owner:
            del self.used[ip]


class Allocator:
    """ClusterIP pools per family plus a NodePort range. Not locked: the store serialises calls."""

    def __init__(
        self,
        service_cidr: str = "10.96.0.0/16",
        service_cidr_v6: str = "fd00:10:96::/112",
        node_ports: tuple[int, int] = (30000, 32767),
    ) -> None:
        v4 = ipaddress.ip_network(service_cidr)
        # The first address goes to `kubernetes`, the tenth to `kube-dns` - only on request.
        self.pools = {
            "IPv4": IPPool(
                service_cidr, [str(v4.network_address + 1), str(v4.network_address + 10)]
            ),
            "IPv6": IPPool(
                service_cidr_v6, [str(ipaddress.ip_network(service_cidr_v6).network_address + 1)]
            ),
        }
        self.node_ports = node_ports
        self.used_ports: dict[int, str] = {}
        self._next_port = node_ports[0]

    @staticmethod
    def family_of(ip_text: str) -> str | None:
        """`IPv4`/`IPv6` for an address, None if it is not one."""
        try:
            return "IPv4" if ipaddress.ip_address(ip_text).version == 4 else "IPv6"
        except ValueError:
            return None

    def reserve_ip(self, ip_text: str, owner: str) -> str:
        """Claim an explicit ClusterIP."""
        family = self.family_of(ip_text)
        if family is None:
            raise AllocationError("must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")
        return self.pools[family].reserve(ip_text, owner)

    def allocate_ip(self, family: str, owner: str) -> str:
        """Allocate a ClusterIP of `family` (`IPv4` or `IPv6`)."""
        return self.pools[family].allocate(owner)

    def release_ip(self, ip_text: str, owner: str) -> None:
        """Free a ClusterIP held by `owner`."""
        family = self.family_of(ip_text)
        if family is not None:
            self.pools[family].release(ip_text, owner)

    def reserve_port(self, port: int, owner: str) -> None:
        """Claim an explicit NodePort."""
        low, high = self.node_ports
        if not low <= port <= high:
            raise AllocationError(
                f"provided port is not in the valid range. The range of valid ports is {low}-{high}"
            )
        holder = self.used_ports.get(port)
        if holder is not None and holder != owner:
            raise AllocationError("provided port is already allocated")
        self.used_ports[port] = owner

    def allocate_port(self, owner: str) -> int:
        """Allocate the next free NodePort."""
        low, high = self.node_ports
        for _ in range(high - low + 1):
            port = self._next_port
            self._next_port = port + 1 if port < high else low
            if port not in self.used_ports:
                self.used_ports[port] = owner
                return port
        raise AllocationError("range of node ports is full")

    def release_owner(self, owner: str) -> None:
        """Free every address and port held by `owner`."""
        for pool in self.pools.values():
            for ip in [ip for ip, holder in pool.used.items() if holder == owner]:
                del pool.used[ip]
        for port in [p for p, holder in self.used_ports.items() if holder == owner]:
            del self.used_ports[port]

    def release_ports(self, owner: str, keep: Iterable[int]) -> None:
        """Free `owner`'s NodePorts that are not in `keep`."""
        keep_set = set(keep)
        for port in [p for p, h in self.used_ports.items() if h == owner and p not in keep_set]:
            del self.used_ports[port]
