"""The serving engine: decode under a memory budget, batch, run one version, answer
(``engine``, ``batcher``, ``runner``, ``predict``, ``budget``, ``metrics``)."""
