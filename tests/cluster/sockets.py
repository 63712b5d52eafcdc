"""Every TCP/UDP socket a process holds, read from /proc: to show nothing leaves 127.0.0.0/8."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

LISTEN = "0A"  # /proc/net/tcp's state for a listening socket


@dataclass(frozen=True)
class Socket:
    table: str  # tcp, tcp6, udp, udp6
    local: ipaddress.IPv4Address | ipaddress.IPv6Address
    remote: ipaddress.IPv4Address | ipaddress.IPv6Address
    listening: bool
    local_port: int = 0

    def stays_on_loopback(self) -> bool:
        ends = [self.local] if self.listening else [self.local, self.remote]
        return all(_loopback(a) for a in ends)


def _loopback(address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def _address(hex_address: str):
    raw = bytes.fromhex(hex_address)
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::-1])
    # four 32-bit words, each in host (little-endian) order
    return ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))


def socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            found.add(target[len("socket:["):-1])
    return found


def sockets_of(pid: int) -> list[Socket]:
    inodes = socket_inodes(pid)
    found = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            if fields[9] not in inodes:
                continue
            local, remote = (_address(f.split(":")[0]) for f in fields[1:3])
            listening = table.startswith("tcp") and fields[3] == LISTEN or (
                table.startswith("udp") and remote.packed == bytes(len(remote.packed)))
            found.append(Socket(table, local, remote, listening,
                                int(fields[1].split(":")[1], 16)))
    return found
