"""trainstack inference: a FastAPI + Gradio app that always serves the newest published model.

Run it with ``python -m inference serve``; build it in-process with
``inference.app.create_app(Settings(...))``.
"""

import os

# No phoning home: clusters running this app often have no internet access at all.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("GRADIO_TELEMETRY_ENABLED", "False")
