"""Network fences (``fences``: default-deny, then exactly the flows the workloads use) and
secret rotation (``rotation``: a changed secret rolls the pods that read it)."""
