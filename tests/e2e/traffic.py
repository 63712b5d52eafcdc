"""Every connection the executed workloads make, and the rendered NetworkPolicies' verdict.

Recording: every container process runs under `strace -f`, filtered (seccomp-bpf) to the
calls that open or accept connections: socket, connect, bind, listen, getsockname. A pod's
trace lists each connect() it made (address, port, TCP or UDP: from the socket() that made
the descriptor) and each port it listened on (bind + listen, or the getsockname after a
listen on port 0). Nothing is sampled: a refused or failed connect() counts too. The
test's own HTTP client, a user outside the cluster, records what it connects to.

Resolving: the harness (tests/e2e/cluster.py) knows which pod and container port stands
behind each local port it handed out (Services, container ports, the Master's rendezvous
port); ports a pod opens by itself (Gloo's) come from the traces; port 53 is the cluster's
DNS; the test names the servers it runs outside the cluster. A connection to anything else
fails: a flow nobody accounted for.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.cluster import LocalCluster
from tests.e2e.netpol import Connection, Endpoint, Policies

STRACE = shutil.which("strace")
SYSCALLS = "socket,connect,bind,listen,getsockname"
DNS_PORT = 53
# The cluster's DNS server (what CoreDNS looks like on most clusters).
DNS = Endpoint("kube-dns", "10.244.255.10", "kube-system", {"k8s-app": "kube-dns"},
               {"dns": (53, "UDP"), "dns-tcp": (53, "TCP")})
USER = Endpoint("a user outside the cluster", "198.51.100.20")

_CALL = re.compile(r"^(\w+)\((.*)\)\s+=\s+(-?\d+)")
_PORT = re.compile(r"sin6?_port=htons\((\d+)\)")
_IPV4 = re.compile(r'sin_addr=inet_addr\("([\d.]+)"\)')
_IPV6 = re.compile(r'inet_pton\(AF_INET6, "([^"]+)"')


@dataclass(frozen=True)
class Attempt:
    """One connect() of a pod."""

    pod: str
    ip: str
    port: int
    protocol: str


@dataclass
class PodTrace:
    connects: list[Attempt] = field(default_factory=list)
    listening: set[int] = field(default_factory=set)


def _calls(text: str) -> Iterable[tuple[str, str, str, int]]:
    """(thread id, call, arguments, result) per syscall, interrupted calls joined."""
    pending: dict[str, str] = {}
    for raw in text.splitlines():
        tid, _, rest = raw.partition(" ")
        rest = rest.strip()
        if rest.endswith("<unfinished ...>"):
            pending[tid] = rest[: -len("<unfinished ...>")]
            continue
        resumed = re.match(r"^<\.\.\. (\w+) resumed>(.*)$", rest)
        if resumed:
            rest = pending.pop(tid, f"{resumed.group(1)}(") + resumed.group(2)
        match = _CALL.match(rest)
        if match:
            yield tid, match.group(1), match.group(2), int(match.group(3))


def _address(args: str) -> tuple[str, int] | None:
    if "AF_INET" not in args:
        return None  # AF_UNIX, AF_NETLINK: not network traffic
    port, ip = _PORT.search(args), _IPV4.search(args) or _IPV6.search(args)
    if not port or not ip:
        return None
    address = ipaddress.ip_address(ip.group(1))
    if address.version == 6 and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address), int(port.group(1))


def read_trace(pod: str, path: Path) -> PodTrace:
    trace = PodTrace()
    kinds: dict[tuple[str, str] | str, str] = {}  # (tid, fd) and fd -> TCP | UDP
    bound: dict[str, int] = {}  # fd -> port of its last bind()
    unnamed: set[str] = set()  # fds listening on a port the kernel chose
    for tid, call, args, result in _calls(path.read_text()):
        fd = args.split(",", 1)[0].strip()
        if call == "socket" and result >= 0 and "AF_INET" in args:
            kinds[(tid, str(result))] = kinds[str(result)] = (
                "UDP" if "SOCK_DGRAM" in args else "TCP")
        elif call == "connect" and (address := _address(args)) and address[1] != 0:
            protocol = kinds.get((tid, fd), kinds.get(fd, "TCP"))
            trace.connects.append(Attempt(pod, *address, protocol))
        elif call == "bind" and (address := _address(args)):
            bound[fd] = address[1]
        elif call == "listen" and result == 0:
            if bound.get(fd):
                trace.listening.add(bound[fd])
            else:
                unnamed.add(fd)
        elif call == "getsockname" and fd in unnamed and (address := _address(args)):
            trace.listening.add(address[1])
            unnamed.discard(fd)
    return trace


@dataclass
class Recorder:
    """Runs each pod's processes under strace; collects what the test's user client did."""

    directory: Path
    user_requests: list[int] = field(default_factory=list)  # local ports the user reached

    def __post_init__(self):
        if STRACE is None:
            raise AssertionError("strace is missing: `make test` installs it (Debian strace)")
        self.directory.mkdir(parents=True, exist_ok=True)

    def tracer(self, pod: str) -> list[str]:
        return [STRACE, "-f", "-qq", "--seccomp-bpf", "-e", f"trace={SYSCALLS}",
                "-e", "signal=none", "-o", str(self.directory / f"{pod}.strace")]

    def user(self, url: str) -> str:
        """A URL the user's client opens (http://127.0.0.1:PORT/...), recorded."""
        self.user_requests.append(int(re.match(r"^\w+://[^/:]+:(\d+)", url).group(1)))
        return url


@dataclass
class Traffic:
    """The recorded connections of one cluster, as pod-to-pod (or outside) Connections."""

    connections: list[Connection]
    endpoints: dict[str, Endpoint]  # every pod the cluster ran, by name

    @staticmethod
    def of(cluster: LocalCluster, recorder: Recorder, outside: Mapping[int, str] = {}
           ) -> Traffic:
        """`outside`: local port -> what it stands for outside the cluster (a download
        server, an external S3 store)."""
        endpoints = {name: Endpoint.of_pod(pod, f"10.244.0.{i + 1}")
                     for i, (name, pod) in enumerate(sorted(cluster.pods.items()))}
        for pod, _ in cluster.listeners.values():
            if pod not in endpoints:  # a stand-in without a process (moto for MinIO)
                manifest = next(p for p in cluster.rendered_pods()
                                if p["metadata"]["name"] == pod)
                endpoints[pod] = Endpoint.of_pod(manifest, f"10.244.1.{len(endpoints)}")
        traces = {pod: read_trace(pod, recorder.directory / f"{pod}.strace")
                  for pod in cluster.pods if (recorder.directory / f"{pod}.strace").exists()}
        resolve = _Resolver(cluster, endpoints, traces, outside)
        found = {resolve.connection(endpoints[a.pod], a.ip, a.port, a.protocol)
                 for trace in traces.values() for a in trace.connects}
        found |= {resolve.connection(USER, "127.0.0.1", port, "TCP")
                  for port in recorder.user_requests if port in cluster.listeners}
        return Traffic(sorted(found, key=str), endpoints)

    def between(self, source: str, dest: str) -> list[Connection]:
        return [c for c in self.connections
                if c.source.name == source and c.dest.name == dest]


class _Resolver:
    def __init__(self, cluster, endpoints, traces, outside):
        self.cluster, self.endpoints, self.outside = cluster, endpoints, outside
        self.own = {port: pod for pod, trace in traces.items() for port in trace.listening}

    def connection(self, source: Endpoint, ip: str, port: int, protocol: str) -> Connection:
        if port == DNS_PORT:
            return Connection(source, DNS, port, protocol)
        if not ipaddress.ip_address(ip).is_loopback:
            raise AssertionError(f"{source.name} connected to {ip}:{port}/{protocol}: an "
                                 "address no pod, Service or test server stands for")
        if port in self.cluster.listeners:
            pod, container_port = self.cluster.listeners[port]
            return Connection(source, self.endpoints[pod], container_port, protocol)
        if port in self.own:
            return Connection(source, self.endpoints[self.own[port]], port, protocol)
        if port in self.outside:
            return Connection(source, Endpoint(self.outside[port], ip), port, protocol)
        raise AssertionError(f"{source.name} connected to {ip}:{port}/{protocol}, which no "
                             "pod, Service or test server listens on")


def network_policies(objects: Mapping[str, Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [o for o in objects.values() if o["kind"] == "NetworkPolicy"]


def denied(policies: Policies, connections: Iterable[Connection]) -> list[str]:
    return [str(c) for c in connections if not policies.allowed(c)]


def idle(policies: Policies, pods: Iterable[Endpoint]) -> list[str]:
    """The policies that select no pod: a fence around nothing, likely a drifted label."""
    pods = list(pods)
    return [p["metadata"]["name"] for p in policies.policies
            if not policies.selected_pods(p, pods)]
