"""NetworkPolicies: deny by default, then exactly the flows the workloads use.

`default-deny` selects every pod of the namespace (also pods someone else adds there) and
allows nothing. Each workload then gets one policy of its own name that lists who may
connect to it (every Flow whose `to` it is) and, in `ingress-egress` mode, where it may
connect to (DNS, the Flows it is a source of, OutsideFlows). Policies are additive, so a
connection is allowed when any policy selecting the destination allows it (and, with
egress, any policy selecting the source).

Selectors come from infra/workloads/catalog.py only: the labels the pod templates carry.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from infra.workloads.catalog import Workload, labels

DEFAULT_DENY = "default-deny"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set on every namespace by the API
ANY_ADDRESS = ("0.0.0.0/0", "::/0")
DNS_PORT = 53


@dataclass(frozen=True)
class Flow:
    """Connections to the pods of `to`, on its named `ports` (empty: any TCP port), from
    the pods of `sources` in this namespace, every pod of `namespaces`, or from outside
    the namespace `outside_of` (users: pods of every other namespace, such as an Ingress
    controller, and addresses outside the cluster: NodePort and LoadBalancer clients)."""

    to: Workload
    ports: tuple[str, ...] = ()
    sources: tuple[Workload, ...] = ()
    namespaces: tuple[str, ...] = ()
    outside_of: str | None = None

    def __post_init__(self):
        for name in self.ports:
            self.to.port(name)  # raises for a port the workload does not declare
        if not (self.sources or self.namespaces or self.outside_of):
            raise ValueError(f"a flow to {self.to.name} from nobody")


@dataclass(frozen=True)
class OutsideFlow:
    """Connections from `sources` out of the namespace (egress mode only). To an address
    outside the cluster: NetworkPolicy matches addresses, not host names, so any address on
    `port`. To a Service of another `namespace` (`<name>.<namespace>.svc`): the policy sees
    its pods' addresses and container ports (the Service's port is translated before), which
    an ipBlock does not match on every CNI and which the URL does not tell, so any TCP port
    of that namespace's pods."""

    sources: tuple[Workload, ...]
    port: int
    what: str  # for people: "the object store s3.eu-west-1.amazonaws.com"
    namespace: str | None = None


# `<service>.<namespace>.svc`, optionally followed by the cluster's domain.
_SERVICE_HOST = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\.(?P<ns>[a-z0-9]([-a-z0-9]*[a-z0-9])?)"
                           r"\.svc(\.[a-z0-9.-]+)?$")


def service_namespace(host: str | None) -> str | None:
    """The namespace of a cluster Service named by `host`, or None for any other host."""
    match = _SERVICE_HOST.fullmatch((host or "").lower().rstrip("."))
    return match.group("ns") if match else None


@dataclass
class FencesArgs:
    namespace: pulumi.Input[str]
    mode: str  # one of NETWORK_POLICY_MODES except "none" (then no component at all)
    workloads: Sequence[Workload]  # every workload the stack deploys
    flows: Sequence[Flow] = ()
    outside: Sequence[OutsideFlow] = field(default_factory=list)

    @property
    def egress(self) -> bool:
        return self.mode == "ingress-egress"


def _selector(workload: Workload) -> k8s.meta.v1.LabelSelectorArgs:
    return k8s.meta.v1.LabelSelectorArgs(match_labels=workload.labels)


def _ports(flow: Flow) -> list[k8s.networking.v1.NetworkPolicyPortArgs]:
    if not flow.ports:
        return [k8s.networking.v1.NetworkPolicyPortArgs(protocol="TCP")]
    return [k8s.networking.v1.NetworkPolicyPortArgs(port=name, protocol=flow.to.port(name).protocol)
            for name in flow.ports]


def _namespaces(operator: str, names: list[str]) -> k8s.networking.v1.NetworkPolicyPeerArgs:
    return k8s.networking.v1.NetworkPolicyPeerArgs(
        namespace_selector=k8s.meta.v1.LabelSelectorArgs(match_expressions=[
            k8s.meta.v1.LabelSelectorRequirementArgs(key=NAMESPACE_NAME_LABEL,
                                                     operator=operator, values=names)]))


def _peers(flow: Flow) -> list[k8s.networking.v1.NetworkPolicyPeerArgs]:
    peers = [k8s.networking.v1.NetworkPolicyPeerArgs(pod_selector=_selector(w))
             for w in flow.sources]
    if flow.namespaces:
        peers.append(_namespaces("In", list(flow.namespaces)))
    if flow.outside_of:
        # No `from` would admit the namespace's own pods too (a training pod calling the
        # app). Other namespaces' pods, and addresses outside the cluster: the Kubernetes
        # docs mean ipBlock for those (a CNI may also match pod addresses with it).
        peers.append(_namespaces("NotIn", [flow.outside_of]))
        peers += [k8s.networking.v1.NetworkPolicyPeerArgs(
            ip_block=k8s.networking.v1.IPBlockArgs(cidr=cidr)) for cidr in ANY_ADDRESS]
    return peers


def ingress_rules(workload: Workload, flows: Sequence[Flow]
                  ) -> list[k8s.networking.v1.NetworkPolicyIngressRuleArgs]:
    return [k8s.networking.v1.NetworkPolicyIngressRuleArgs(from_=_peers(f), ports=_ports(f))
            for f in flows if f.to == workload]


def egress_rules(workload: Workload, flows: Sequence[Flow], outside: Sequence[OutsideFlow]
                 ) -> list[k8s.networking.v1.NetworkPolicyEgressRuleArgs]:
    # DNS to any address: the cluster's resolver may be kube-dns pods, NodeLocal DNSCache
    # on a link-local node address, or something else entirely.
    rules = [k8s.networking.v1.NetworkPolicyEgressRuleArgs(ports=[
        k8s.networking.v1.NetworkPolicyPortArgs(port=DNS_PORT, protocol=protocol)
        for protocol in ("UDP", "TCP")])]
    rules += [k8s.networking.v1.NetworkPolicyEgressRuleArgs(
        to=[k8s.networking.v1.NetworkPolicyPeerArgs(pod_selector=_selector(f.to))],
        ports=_ports(f)) for f in flows if workload in f.sources]
    rules += [_outside_rule(o) for o in outside if workload in o.sources]
    return rules


def _outside_rule(flow: OutsideFlow) -> k8s.networking.v1.NetworkPolicyEgressRuleArgs:
    if flow.namespace:
        return k8s.networking.v1.NetworkPolicyEgressRuleArgs(
            to=[_namespaces("In", [flow.namespace])],
            ports=[k8s.networking.v1.NetworkPolicyPortArgs(protocol="TCP")])
    return k8s.networking.v1.NetworkPolicyEgressRuleArgs(
        to=[k8s.networking.v1.NetworkPolicyPeerArgs(
            ip_block=k8s.networking.v1.IPBlockArgs(cidr=cidr)) for cidr in ANY_ADDRESS],
        ports=[k8s.networking.v1.NetworkPolicyPortArgs(port=flow.port, protocol="TCP")])


class NetworkFences(pulumi.ComponentResource):
    """`default-deny` plus one policy per workload (named like the workload)."""

    def __init__(self, name: str, args: FencesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("trainstack:index:NetworkFences", name, None, opts)
        types = ["Ingress", "Egress"] if args.egress else ["Ingress"]
        child = pulumi.ResourceOptions(parent=self)
        self.policies = [self._policy(DEFAULT_DENY, args.namespace, k8s.meta.v1.LabelSelectorArgs(),
                                      types, None, None, child)]
        for workload in args.workloads:
            egress = egress_rules(workload, args.flows, args.outside) if args.egress else None
            self.policies.append(self._policy(
                workload.name, args.namespace, _selector(workload), types,
                ingress_rules(workload, args.flows) or None, egress, child))
        self.register_outputs({"policies": [p.metadata.name for p in self.policies]})

    @staticmethod
    def _policy(name, namespace, selector, types, ingress, egress, opts):
        return k8s.networking.v1.NetworkPolicy(
            f"netpol-{name}",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=name, namespace=namespace,
                                                labels=labels("fences")),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=selector, policy_types=types, ingress=ingress, egress=egress),
            opts=opts,
        )
