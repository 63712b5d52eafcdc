"""Network fences (``fences``): default-deny, then exactly the flows the workloads use, the
NetworkPolicies built from the workloads' own labels and ports. (Secret rotation, which
names the Secrets the workloads read, is infra.workloads.rotation.)"""
