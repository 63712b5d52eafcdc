"""What is served: published versions (``versions``), the hot-swapping registry that follows
latest.json (``registry``) and runs still training (``progress``)."""
