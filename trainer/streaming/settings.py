"""The data cache's environment contract, which the stack sets (infra.training). Stdlib only:
the Pulumi program imports it, and its environment has no torch."""

CACHE_DIR_ENV = "TRAINSTACK_DATA_CACHE_DIR"
"""Where a rank reads shards ahead into: the training pod's data-cache emptyDir."""
CACHE_BYTES_ENV = "TRAINSTACK_DATA_CACHE_BYTES"
"""How many bytes of shards the read-ahead may hold there."""
