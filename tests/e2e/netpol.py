"""Kubernetes NetworkPolicy semantics (networking.k8s.io/v1), for checking connections.

A connection from A to B on port P is allowed when egress from A is allowed AND ingress to
B is allowed. For each direction: a pod no policy selects (same namespace, podSelector,
that direction in policyTypes) is not isolated and allows everything; an isolated pod
allows what at least one of the policies selecting it allows (policies add up). A rule
with no `from`/`to` matches every peer, with no `ports` every port. Peers: a podSelector
alone means pods of the policy's namespace; a namespaceSelector alone, every pod of the
matching namespaces; both, the matching pods of the matching namespaces; an ipBlock an
address (here only addresses outside the cluster: what ipBlock does with pod IPs differs
between CNIs, so a flow between pods must be allowed by selectors). A named port is the
destination pod's container port of that name and protocol; `endPort` makes a range.
Namespaces carry `kubernetes.io/metadata.name` (the API server sets it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class Endpoint:
    """One end of a connection: a pod (namespace set) or an address outside the cluster."""

    name: str
    ip: str
    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    # named container ports: name -> (port, protocol)
    ports: Mapping[str, tuple[int, str]] = field(default_factory=dict, hash=False)

    @property
    def in_cluster(self) -> bool:
        return self.namespace is not None

    @staticmethod
    def of_pod(pod: Mapping[str, Any], ip: str) -> Endpoint:
        """From a Pod manifest (or a template with metadata.name and namespace)."""
        ports = {p["name"]: (p["containerPort"], p.get("protocol", "TCP"))
                 for c in pod["spec"]["containers"] for p in c.get("ports") or [] if "name" in p}
        meta = pod["metadata"]
        return Endpoint(meta["name"], ip, meta["namespace"], dict(meta.get("labels") or {}),
                        ports)


@dataclass(frozen=True)
class Connection:
    source: Endpoint
    dest: Endpoint
    port: int
    protocol: str = "TCP"

    def __str__(self) -> str:
        return f"{self.source.name} -> {self.dest.name}:{self.port}/{self.protocol}"


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector: matchLabels and matchExpressions all hold; {} selects everything."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        held = {"In": key in labels and labels[key] in values,
                "NotIn": key not in labels or labels[key] not in values,
                "Exists": key in labels, "DoesNotExist": key not in labels}
        if not held[op]:
            return False
    return True


def policy_types(policy: Mapping[str, Any]) -> list[str]:
    spec = policy["spec"]
    if spec.get("policyTypes"):
        return list(spec["policyTypes"])
    return ["Ingress", *(["Egress"] if spec.get("egress") else [])]


class Policies:
    """The NetworkPolicies of a cluster, and its namespaces' labels."""

    def __init__(self, policies: Iterable[Mapping[str, Any]],
                 namespaces: Mapping[str, Mapping[str, str]] | Iterable[str] = ()):
        self.policies = list(policies)
        names = namespaces if isinstance(namespaces, Mapping) else {n: {} for n in namespaces}
        self.namespaces = {n: {**labels, NAMESPACE_NAME_LABEL: n} for n, labels in names.items()}

    def selecting(self, pod: Endpoint, direction: str) -> list[Mapping[str, Any]]:
        return [p for p in self.policies
                if pod.in_cluster and p["metadata"]["namespace"] == pod.namespace
                and direction in policy_types(p) and selects(p["spec"].get("podSelector"),
                                                             pod.labels)]

    def selected_pods(self, policy: Mapping[str, Any], pods: Sequence[Endpoint]
                      ) -> list[Endpoint]:
        return [pod for pod in pods if pod.namespace == policy["metadata"]["namespace"]
                and selects(policy["spec"].get("podSelector"), pod.labels)]

    def allowed(self, conn: Connection) -> bool:
        return self.egress_allowed(conn) and self.ingress_allowed(conn)

    def ingress_allowed(self, conn: Connection) -> bool:
        if not conn.dest.in_cluster:
            return True
        policies = self.selecting(conn.dest, "Ingress")
        return not policies or any(
            self._rule_allows(rule, "from", p["metadata"]["namespace"], conn.source, conn)
            for p in policies for rule in p["spec"].get("ingress") or [])

    def egress_allowed(self, conn: Connection) -> bool:
        if not conn.source.in_cluster:
            return True
        policies = self.selecting(conn.source, "Egress")
        return not policies or any(
            self._rule_allows(rule, "to", p["metadata"]["namespace"], conn.dest, conn)
            for p in policies for rule in p["spec"].get("egress") or [])

    def _rule_allows(self, rule, peers_key, namespace, peer: Endpoint, conn) -> bool:
        peers = rule.get(peers_key) or []
        return ((not peers or any(self._peer_matches(p, namespace, peer) for p in peers))
                and self._port_matches(rule.get("ports") or [], conn))

    def _peer_matches(self, peer: Mapping[str, Any], namespace: str, end: Endpoint) -> bool:
        if "ipBlock" in peer:
            return not end.in_cluster and _in_block(peer["ipBlock"], end.ip)
        if not end.in_cluster:
            return False
        if "namespaceSelector" in peer:
            labels = self.namespaces.get(end.namespace, {NAMESPACE_NAME_LABEL: end.namespace})
            if not selects(peer["namespaceSelector"], labels):
                return False
        elif end.namespace != namespace:
            return False
        return "podSelector" not in peer or selects(peer["podSelector"], end.labels)

    @staticmethod
    def _port_matches(ports: Sequence[Mapping[str, Any]], conn: Connection) -> bool:
        if not ports:
            return True
        for entry in ports:
            if entry.get("protocol", "TCP") != conn.protocol:
                continue
            port = entry.get("port")
            if port is None:
                return True
            if isinstance(port, str):
                if conn.dest.ports.get(port) == (conn.port, conn.protocol):
                    return True
            elif port <= conn.port <= entry.get("endPort", port):
                return True
        return False


def _in_block(block: Mapping[str, Any], ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    cidr = ipaddress.ip_network(block["cidr"])
    if address.version != cidr.version or address not in cidr:
        return False
    return not any(address in ipaddress.ip_network(e) for e in block.get("except") or []
                   if ipaddress.ip_network(e).version == address.version)
