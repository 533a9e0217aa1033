"""bind: which addresses the server block listens on.

Syntax::

    bind ADDRESS|IFACE ... {
        except ADDRESS ...
    }

Without ``bind`` a block listens on every address.  Interface names are resolved to their
IPv4 and IPv6 addresses at start-up.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import ClassVar

from dnsd.chain import Plugin as Base
from dnsd.chain import SetupContext
from dnsd.corefile.ast import Directive


def interface_addresses(name: str) -> list[str]:
    """IPv4 and IPv6 addresses of a network interface ([] if it does not exist)."""
    addrs: list[str] = []
    try:
        import fcntl
        import struct

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            req = struct.pack("256s", name.encode()[:15])
            res = fcntl.ioctl(s.fileno(), 0x8915, req)  # SIOCGIFADDR
            addrs.append(socket.inet_ntoa(res[20:24]))
    except OSError:
        pass
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and parts[5] == name:
                    raw = parts[0]
                    addr = ipaddress.IPv6Address(int(raw, 16))
                    if not addr.is_link_local:
                        addrs.append(str(addr))
    except OSError:
        pass
    return addrs


class Plugin(Base):
    name: ClassVar[str] = "bind"
    passive: ClassVar[bool] = True
    repeatable: ClassVar[bool] = True

    def __init__(self, hosts: list[str]) -> None:
        self.hosts = hosts

    @classmethod
    def setup(cls, directives: list[Directive], ctx: SetupContext) -> Plugin:
        wanted: list[str] = []
        excluded: set[str] = set()
        for d in directives:
            if not d.args:
                raise d.error("Wrong argument count or unexpected line ending after 'bind'")
            for arg in d.args:
                wanted.extend(_resolve(d, arg))
            for child in d.children:
                if child.name != "except" or not child.args:
                    raise child.error(f"unknown property '{child.name}'")
                for arg in child.args:
                    excluded.update(_resolve(child, arg))
        hosts = [h for h in dict.fromkeys(wanted) if h not in excluded]
        if not hosts:
            raise directives[0].error("bind: no address left to listen on")
        return cls(hosts)


def _resolve(d: Directive, arg: str) -> list[str]:
    try:
        return [str(ipaddress.ip_address(arg))]
    except ValueError:
        pass
    addrs = interface_addresses(arg)
    if not addrs:
        raise d.error(f"not a valid IP address or interface name: {arg!r}")
    return addrs
