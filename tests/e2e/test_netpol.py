"""The tools of the traffic-vs-policy proof, on their own: NetworkPolicy semantics as
Kubernetes defines them, and the strace reading that records connections."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.e2e.netpol import Connection, Endpoint, Policies, selects
from tests.e2e.traffic import Recorder, read_trace

NS = "team"
WEB = Endpoint("web", "10.0.0.1", NS, {"app": "web"}, {"http": (8080, "TCP")})
DB = Endpoint("db", "10.0.0.2", NS, {"app": "db", "tier": "data"}, {"sql": (5432, "TCP")})
OTHER_NS = Endpoint("probe", "10.0.1.1", "monitoring", {"app": "web"})
INTERNET = Endpoint("a client", "203.0.113.9")


def policy(name, selector, ingress=None, egress=None, types=None, namespace=NS):
    spec = {"podSelector": selector}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    if types:
        spec["policyTypes"] = types
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


DENY_ALL = policy("deny", {}, types=["Ingress"])
DB_FROM_WEB = policy("db", {"matchLabels": {"app": "db"}},
                     ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                               "ports": [{"port": "sql"}]}])


def test_a_pod_no_policy_selects_accepts_everything():
    assert Policies([]).allowed(Connection(WEB, DB, 5432))
    assert Policies([DB_FROM_WEB]).allowed(Connection(DB, WEB, 9999))  # web is not isolated


def test_an_isolated_pod_accepts_what_some_policy_allows():
    fences = Policies([DENY_ALL, DB_FROM_WEB], [NS, "monitoring"])
    assert fences.allowed(Connection(WEB, DB, 5432))
    assert not fences.allowed(Connection(WEB, DB, 5433))  # not the named port's number
    assert not fences.allowed(Connection(DB, WEB, 8080))  # web: only deny-all selects it
    assert not fences.allowed(Connection(OTHER_NS, DB, 5432))  # podSelector: own namespace
    assert not fences.allowed(Connection(INTERNET, DB, 5432))
    assert not fences.allowed(Connection(WEB, DB, 5432, "UDP"))


def test_policies_add_up():
    more = policy("db-monitoring", {"matchLabels": {"tier": "data"}}, ingress=[{"from": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}])
    fences = Policies([DENY_ALL, DB_FROM_WEB, more], [NS, "monitoring"])
    assert fences.allowed(Connection(OTHER_NS, DB, 1234))  # any port: the rule has none
    assert fences.allowed(Connection(WEB, DB, 5432))


def test_namespace_and_pod_selector_together_need_both():
    both = policy("db", {"matchLabels": {"app": "db"}}, ingress=[{"from": [{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
        "podSelector": {"matchLabels": {"app": "prometheus"}}}]}])
    fences = Policies([both], [NS, "monitoring"])
    assert not fences.allowed(Connection(OTHER_NS, DB, 5432))  # right namespace, wrong pod
    prometheus = Endpoint("prom", "10.0.1.2", "monitoring", {"app": "prometheus"})
    assert fences.allowed(Connection(prometheus, DB, 5432))


def test_ip_blocks_ports_ranges_and_expressions():
    rule = {"from": [{"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.9/32"]}},
                     {"namespaceSelector": {"matchExpressions": [
                         {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                          "values": [NS]}]}}],
            "ports": [{"port": 30000, "endPort": 30010, "protocol": "TCP"}]}
    fences = Policies([policy("web", {"matchLabels": {"app": "web"}}, ingress=[rule])],
                      [NS, "monitoring"])
    assert not fences.allowed(Connection(INTERNET, WEB, 30005))  # the excepted address
    assert fences.allowed(Connection(Endpoint("x", "203.0.113.10"), WEB, 30005))
    assert not fences.allowed(Connection(Endpoint("x", "203.0.113.10"), WEB, 30011))
    assert fences.allowed(Connection(OTHER_NS, WEB, 30010))  # another namespace
    assert not fences.allowed(Connection(DB, WEB, 30000))  # its own namespace: NotIn
    # ipBlock is for addresses outside the cluster: a pod's address does not count.
    assert not fences.allowed(Connection(replace_ip(DB, "203.0.113.10"), WEB, 30000))


def replace_ip(endpoint: Endpoint, ip: str) -> Endpoint:
    return Endpoint(endpoint.name, ip, endpoint.namespace, endpoint.labels, endpoint.ports)


def test_egress_is_checked_at_the_source_and_types_default_from_the_spec():
    egress = policy("web-out", {"matchLabels": {"app": "web"}}, egress=[
        {"to": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": "sql"}]},
        {"ports": [{"port": 53, "protocol": "UDP"}]}])
    fences = Policies([egress], [NS])
    assert fences.allowed(Connection(WEB, DB, 5432))
    assert fences.allowed(Connection(WEB, INTERNET, 53, "UDP"))
    assert not fences.allowed(Connection(WEB, INTERNET, 443))
    assert fences.allowed(Connection(DB, INTERNET, 443))  # db has no egress policy
    # Without policyTypes every policy affects ingress too (Kubernetes' default): web now
    # accepts nothing. Naming only Egress leaves its ingress open.
    assert not fences.allowed(Connection(DB, WEB, 8080))
    egress["spec"]["policyTypes"] = ["Egress"]
    assert Policies([egress], [NS]).allowed(Connection(DB, WEB, 8080))


@pytest.mark.parametrize(("selector", "labels", "expected"), [
    ({}, {"a": "1"}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
    ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]}, {"a": "2"},
     True),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {}, False),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {}, True),
])
def test_label_selectors(selector, labels, expected):
    assert selects(selector, labels) is expected


SAMPLE = """\
101 socket(AF_INET, SOCK_DGRAM|SOCK_CLOEXEC|SOCK_NONBLOCK, IPPROTO_IP) = 5
101 connect(5, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("10.9.9.9")}, 16) = 0
101 socket(AF_INET6, SOCK_STREAM|SOCK_CLOEXEC, IPPROTO_TCP) = 6
101 bind(6, {sa_family=AF_INET6, sin6_port=htons(29500), sin6_flowinfo=htonl(0), \
inet_pton(AF_INET6, "::", &sin6_addr), sin6_scope_id=0}, 28) = 0
101 listen(6, 128)                    = 0
102 socket(AF_INET, SOCK_STREAM, IPPROTO_TCP) = 7
102 bind(7, {sa_family=AF_INET, sin_port=htons(0), sin_addr=inet_addr("127.0.0.1")}, 16) = 0
102 listen(7, -1 <unfinished ...>
101 connect(8, {sa_family=AF_UNIX, sun_path="/run/x"}, 110) = 0
102 <... listen resumed>)                = 0
102 getsockname(7, {sa_family=AF_INET, sin_port=htons(41234), \
sin_addr=inet_addr("127.0.0.1")}, [16]) = 0
103 connect(9, {sa_family=AF_INET6, sin6_port=htons(9000), sin6_flowinfo=htonl(0), \
inet_pton(AF_INET6, "::ffff:127.0.0.1", &sin6_addr), sin6_scope_id=0}, 28 <unfinished ...>
103 <... connect resumed>)            = -1 EINPROGRESS (Operation now in progress)
"""


def test_reading_a_trace(tmp_path):
    path = tmp_path / "pod.strace"
    path.write_text(SAMPLE)
    trace = read_trace("pod", path)
    assert [(a.ip, a.port, a.protocol) for a in trace.connects] == [
        ("10.9.9.9", 53, "UDP"), ("127.0.0.1", 9000, "TCP")]  # AF_UNIX is not traffic
    assert trace.listening == {29500, 41234}  # a fixed port; one the kernel chose


def test_a_traced_process_records_its_connections(tmp_path):
    """strace as the e2e runs it: a real connect() and listen() show up."""
    recorder = Recorder(tmp_path)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        code = (f"import socket; s = socket.create_connection(('127.0.0.1', {port})); "
                "t = socket.socket(); t.bind(('127.0.0.1', 0)); t.listen()")
        subprocess.run([*recorder.tracer("client"), sys.executable, "-c", code], check=True,
                       timeout=60)
    trace = read_trace("client", tmp_path / "client.strace")
    assert [(a.ip, a.port, a.protocol) for a in trace.connects] == [("127.0.0.1", port, "TCP")]
    assert len(trace.listening) == 1
