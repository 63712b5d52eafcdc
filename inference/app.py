"""``create_app(settings)``: the FastAPI app with the REST API and the Gradio UI at "/".

A factory (not a module-level app) so tests and the benchmark can build several apps,
each on its own store, in one process.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI

from trainer.cpus import usable_cpus
from trainer.storage import open_store

from .api import build_router
from .metrics import Metrics
from .predict import DEFAULT_MAX_PIXELS
from .registry import ModelVersion, Registry

log = logging.getLogger(__name__)


def default_torch_threads() -> int:
    """Half the CPUs this process may use (cgroup quota, not the node's cores), 1 to 4.

    Requests already run in parallel; a few intra-op threads each avoids oversubscription.
    os.cpu_count() would count a 64-core node's cores in a pod limited to 2 CPUs.
    """
    return max(1, min(4, usable_cpus() // 2))


@dataclass
class Settings:
    store: str | None = None  # s3://HOST:PORT or a directory; None: $TRAINSTACK_STORE
    host: str = "0.0.0.0"
    port: int = 7860
    model_name: str | None = None  # <model>-<dataset>; None: the newest published model
    poll_seconds: float = 15.0
    max_upload_mb: float = 10.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    cache_dir: Path | None = None  # downloaded versions; None: a fresh temp dir
    torch_threads: int = field(default_factory=default_torch_threads)
    concurrency: int = 16  # Gradio's default of 1 would serialize every UI prediction


class MetricsMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware) so Gradio's streaming responses pass untouched."""

    def __init__(self, app: Any, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.observe_request(scope["path"], status[0], time.perf_counter() - start)


def create_registry(settings: Settings) -> Registry:
    store = open_store(settings.store)
    cache_dir = settings.cache_dir or Path(tempfile.mkdtemp(prefix="trainstack-inference-"))
    return Registry(store, cache_dir, settings.model_name, settings.poll_seconds)


def create_app(settings: Settings, registry: Registry | None = None) -> FastAPI:
    """The whole service. The poller starts with the app's lifespan (uvicorn/TestClient)."""
    import gradio as gr

    from .ui import CSS, THEME, build_demo

    torch.set_num_threads(settings.torch_threads)
    # A temp cache dir this app made is this app's to delete at shutdown (not a given one).
    owned_cache = registry is None and settings.cache_dir is None
    registry = registry or create_registry(settings)
    metrics = Metrics()

    def on_swap(loaded: ModelVersion) -> None:
        metrics.set_model(loaded.name, loaded.version)

    registry.on_swap.append(on_swap)
    if registry.current:
        on_swap(registry.current)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        log.info("serving models from %s (model: %s, polling every %gs)", registry.store.url,
                 registry.model_name or "newest published", registry.poll_seconds)
        registry.start()  # its first check runs at once, in the background
        try:
            yield
        finally:
            registry.stop()
            if owned_cache:
                shutil.rmtree(registry.cache_dir, ignore_errors=True)
                log.debug("removed the model cache %s", registry.cache_dir)

    app = FastAPI(title="trainstack inference", lifespan=lifespan,
                  description="Classify images with the newest published model.")
    app.state.registry, app.state.metrics, app.state.settings = registry, metrics, settings
    app.include_router(build_router(registry, metrics, int(settings.max_upload_mb * 1e6),
                                    settings.max_pixels))
    demo = build_demo(registry, metrics, settings.max_pixels)
    demo.queue(default_concurrency_limit=settings.concurrency, max_size=256)
    gr.mount_gradio_app(app, demo, path="/", theme=THEME, css=CSS,
                        allowed_paths=[str(registry.cache_dir)],
                        max_file_size=int(settings.max_upload_mb * 1e6),
                        footer_links=["api"])
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
