"""Datasets larger than memory: shards in the store, streamed by every rank.

``format``: the shard files and their index (the one contract writers and readers share);
``ingest``: writes them; ``plan``: which samples each rank trains, in which order, and how
a stopped epoch's rest is dealt out again; ``cache``: the bounded read-ahead of shards on
local disk; ``source``: the sharded dataset, held in memory or streamed.
"""
