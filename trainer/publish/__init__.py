"""A trained run as a published version: the exported program, meta.json and metrics.json,
the figures, and latest.json moved last (``publication``, ``figures``)."""
