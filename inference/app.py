"""``create_app(settings)``: the FastAPI app with the REST API and the Gradio UI at "/".

A factory (not a module-level app) so tests and the benchmark can build several apps,
each on its own store, in one process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI
from starlette.datastructures import Secret
from starlette.routing import Route

from inference.edge.api import READS_ITS_OWN_BODY, build_router
from inference.edge.auth import (
    LOGIN_MESSAGE,
    BearerAuthMiddleware,
    LoginTitleMiddleware,
    check_token,
    gradio_login,
    gradio_session,
)
from inference.edge.bodies import MULTIPART_OVERHEAD, BodyReader, BoundedBodies, UploadLimits
from inference.edge.uploads import UploadCache, keep_uploads_under
from inference.monitoring import training as training_states
from inference.monitoring.mlflow_reports import ReportArtifacts
from inference.monitoring.monitor import Monitor
from inference.published.progress import ProgressBoard
from inference.published.registry import ModelVersion, Registry
from inference.serving.engine import Engine, EngineConfig
from inference.serving.metrics import Metrics
from inference.serving.predict import DEFAULT_MAX_PIXELS
from trainer.contract.env import TRACKING_URI_ENV
from trainer.contract.errors import ConfigError
from trainer.contract.layout import AUTH_TOKEN_ENV
from trainer.limits.cpus import usable_cpus
from trainer.store import open_store

log = logging.getLogger(__name__)


def default_torch_threads(batching: bool = True) -> int:
    """Intra-op threads from the CPUs this process may use (cgroup quota, not the node's
    cores: os.cpu_count() would count a 64-core node's cores in a pod limited to 2 CPUs).

    Batched: the one inference thread gets all but one CPU (at most 16); the last one is
    the event loop's and the decoders'. An OpenMP team sharing its cores with them stalls
    at every barrier whenever one of its threads is descheduled (measured on 2 CPUs:
    2 threads gave a tenth of 1 thread's img/s). One at a time: requests run in parallel,
    so each gets half of the CPUs, 1 to 4.
    """
    cpus = usable_cpus()
    return max(1, min(16, cpus - 1)) if batching else max(1, min(4, cpus // 2))


DEFAULT_UPLOAD_MEMORY_MB = 128  # POST /predict bodies in flight together, by default


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class Settings:
    """Everything ``python -m inference serve`` takes (flags and env in __main__)."""

    store: str | None = None  # s3://HOST:PORT or a directory; None: $TRAINSTACK_STORE
    host: str = "0.0.0.0"
    port: int = 7860
    model_name: str | None = None  # <model>-<dataset>; None: the newest published model
    poll_seconds: float = 15.0
    max_upload_mb: float = 10.0
    max_pixels: int = DEFAULT_MAX_PIXELS
    cache_dir: Path | None = None  # downloaded versions; None: a fresh temp dir
    torch_threads: int | None = None  # None: default_torch_threads(batching)
    lone_threads: int | None = None  # a lone request's forward pass; None: the usable CPUs,
    # 0: torch_threads (off)
    concurrency: int = 16  # Gradio's default of 1 would serialize every UI prediction
    batching: bool = True  # False: each request runs its own forward pass (the baseline)
    max_batch: int = 32  # requests per forward pass at most
    max_batch_wait_ms: float = 5.0  # the longest a batch waits for requests on their way
    precision: str = "auto"  # auto | fp32 | bf16 (inference.serving.runner)
    decode: str = "draft"  # draft | full: every JPEG pixel decoded (the bench's baseline)
    program: str = "frozen"  # frozen | eager: the program as published (inference.serving.runner)
    device: str = field(default_factory=default_device)  # cpu | cuda[:N]
    decode_threads: int = field(default_factory=usable_cpus)
    decode_memory_mb: float = 512.0  # decodes running at once share this much memory
    upload_cache_mb: float = 256.0  # Gradio's uploads kept on disk, at most (after each one)
    upload_cache_max_age_s: float = 600.0  # uploads older than this are deleted
    upload_cache_sweep_s: float = 30.0  # how often the age limit is applied
    # Request bodies in flight, POST /predict's and Gradio's (inference.edge.bodies): their
    # memory together, the longest a body may send nothing, the longest a whole body may take.
    # None: 128 MiB, or one whole upload of max_upload_mb when that is more.
    upload_memory_mb: float | None = None
    upload_idle_timeout_s: float = 10.0
    upload_read_timeout_s: float = 60.0
    # $TRAINSTACK_AUTH_TOKEN (inference.edge.auth); None or "": no access control. Never a flag
    # (argv is visible to every process) and never in a repr or a log line.
    auth_token: str | None = field(default=None, repr=False)
    # Where users open MLflow (http(s)); links to a version's MLflow run are built on it.
    # None: the address the trainer saw (MLFLOW_TRACKING_URI in the training pods).
    mlflow_ui_url: str | None = None
    # Drift monitoring (inference.monitoring): a check every `monitor_window` predictions
    # or `monitor_window_s` seconds; off: nothing recorded.
    monitor: bool = True
    monitor_window: int = 256
    monitor_window_s: float = 60.0

    def __post_init__(self) -> None:
        if self.mlflow_ui_url and not self.mlflow_ui_url.startswith(("http://", "https://")):
            raise ConfigError(f"invalid mlflow_ui_url {self.mlflow_ui_url!r}: allowed: an "
                              "http:// or https:// address", key="mlflow_ui_url")

    def upload_limits(self) -> UploadLimits:
        max_bytes = int(self.max_upload_mb * 1e6)
        memory_bytes = (max(DEFAULT_UPLOAD_MEMORY_MB * 2**20, max_bytes + MULTIPART_OVERHEAD)
                        if self.upload_memory_mb is None else int(self.upload_memory_mb * 2**20))
        try:
            return UploadLimits(max_bytes=max_bytes, memory_bytes=memory_bytes,
                                idle_timeout_s=self.upload_idle_timeout_s,
                                read_timeout_s=self.upload_read_timeout_s)
        except ValueError as e:
            if "must hold one whole upload" in str(e):
                raise ConfigError(f"upload_memory_mb {self.upload_memory_mb:g} is too small for "
                                  f"max_upload_mb {self.max_upload_mb:g}: {e}",
                                  key="upload_memory_mb") from None
            raise ConfigError(f"{e}; allowed: a number > 0", key="upload limits") from None

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            batching=self.batching, max_batch=self.max_batch,
            max_wait_ms=self.max_batch_wait_ms, precision=self.precision,
            torch_threads=self.torch_threads or default_torch_threads(self.batching),
            lone_threads=(min(16, usable_cpus()) if self.lone_threads is None
                          else self.lone_threads),
            decode_threads=self.decode_threads,
            decode_memory_bytes=int(self.decode_memory_mb * 2**20),
            max_pixels=self.max_pixels, decode=self.decode, program=self.program)


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
    return Registry(store, cache_dir, settings.model_name, settings.poll_seconds,
                    device=settings.device)


def create_app(settings: Settings, registry: Registry | None = None) -> FastAPI:
    """The whole service. The poller starts with the app's lifespan (uvicorn/TestClient)."""
    from inference.ui.blocks import build_demo

    config = settings.engine_config()
    token = check_token(settings.auth_token)  # before anything starts: a bad one is fatal
    torch.set_num_threads(config.torch_threads)
    # A temp cache dir this app made is this app's to delete at shutdown (not a given one).
    owned_cache = registry is None and settings.cache_dir is None
    registry = registry or create_registry(settings)
    metrics = Metrics()
    engine = Engine(config, metrics)
    registry.prepare = engine.prepare  # precision chosen and kernels warm before the swap

    def on_swap(loaded: ModelVersion) -> None:
        runner = engine.runner(loaded)
        metrics.set_model(loaded.name, loaded.version, runner.precision, runner.program)

    registry.on_swap.append(on_swap)
    board = ProgressBoard(registry, settings.mlflow_ui_url)
    monitor = None
    if settings.monitor:
        monitor = Monitor(registry.store, metrics.registry, window_size=settings.monitor_window,
                          window_seconds=settings.monitor_window_s,
                          artifacts=report_artifacts(registry, board))
        engine.observers.append(monitor)
    if registry.current:
        on_swap(registry.current)
    training_states.register(metrics.registry, board)
    demo = build_demo(registry, engine, metrics, delete_cache=(
        settings.upload_cache_sweep_s, settings.upload_cache_max_age_s), board=board,
        monitor=monitor)
    uploads = UploadCache(demo.upload_file_set, int(settings.upload_cache_mb * 1e6))
    app = FastAPI(title="trainstack inference", description="Classify images with the newest "
                  "published model.", lifespan=lifespan(settings, registry, engine, uploads,
                                                        token is not None, owned_cache))
    app.state.registry, app.state.metrics, app.state.settings = registry, metrics, settings
    app.state.engine, app.state.demo, app.state.progress = engine, demo, board
    app.state.monitor = monitor
    bodies = BodyReader(settings.upload_limits())
    metrics.upload_budget.set(bodies.limits.memory_bytes)
    metrics.upload_reserved.set_function(lambda: bodies.budget.used)
    router = build_router(registry, metrics, engine, bodies)
    app.include_router(router)
    mount_ui(app, demo, settings, registry, token)
    # Every other body (Gradio's routes) within the same limits, from the same budget; the
    # upload cache trimmed as soon as an upload is answered (inference.edge.uploads).
    app.add_middleware(BoundedBodies, reader=bodies, own_paths=READS_ITS_OWN_BODY,
                       after=uploads.trim, signed_in=gradio_session(app) if token else None)
    if token:
        # The FastAPI app's own routes (the API, /docs, /openapi.json), not Gradio's mount.
        api_paths = {route.path.rstrip("/") for route in [*router.routes, *app.routes]
                     if isinstance(route, Route)}
        # Secret: Starlette's repr of the middleware list shows "**********", not the token.
        app.add_middleware(BearerAuthMiddleware, token=Secret(token), api_paths=api_paths)
        app.add_middleware(LoginTitleMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.state.access_control = token is not None
    return app


def report_artifacts(registry: Registry, board: ProgressBoard) -> ReportArtifacts | None:
    """Drift reports into the version's MLflow run, when the app has MLFLOW_TRACKING_URI."""
    uri = os.environ.get(TRACKING_URI_ENV)
    if not uri:
        return None

    def run_of(model: str, version: str) -> str | None:
        current = registry.current
        if current is None or (current.name, current.version) != (model, version):
            return None
        return board.mlflow_run_id(model, current.meta.run_id)

    return ReportArtifacts(uri, run_of)


def mount_ui(app: FastAPI, demo: Any, settings: Settings, registry: Registry,
             token: str | None) -> None:
    """The Gradio UI at "/", behind Gradio's login when there is a token."""
    import gradio as gr

    from inference.ui.blocks import CSS, THEME

    demo.queue(default_concurrency_limit=settings.concurrency, max_size=256)
    gr.mount_gradio_app(app, demo, path="/", theme=THEME, css=CSS,
                        allowed_paths=[str(registry.cache_dir)],
                        max_file_size=int(settings.max_upload_mb * 1e6),
                        footer_links=["api"], auth=gradio_login(token) if token else None,
                        auth_message=LOGIN_MESSAGE if token else None)


def lifespan(settings: Settings, registry: Registry, engine: Engine, uploads: UploadCache,
             guarded: bool, owned_cache: bool) -> Callable[[FastAPI], Any]:
    """Start the poller and the upload-cache sweeper; stop both and clean up at shutdown."""

    @contextlib.asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        log.info("serving models from %s (model: %s, polling every %gs); %s; access control: "
                 "%s", registry.store.url, registry.model_name or "newest published",
                 registry.poll_seconds, describe(engine.config, settings.device),
                 f"on ({AUTH_TOKEN_ENV})" if guarded else "off (anyone who reaches this port)")
        registry.start()  # its first check runs at once, in the background
        try:
            async with keep_uploads_under(uploads, settings.upload_cache_sweep_s):
                yield
        finally:
            registry.stop()
            engine.close()
            if app.state.monitor is not None:
                app.state.monitor.stop()
            if owned_cache:
                shutil.rmtree(registry.cache_dir, ignore_errors=True)
                log.debug("removed the model cache %s", registry.cache_dir)

    return run


def describe(config: EngineConfig, device: str) -> str:
    if not config.batching:
        return (f"one request at a time, {config.torch_threads} intra-op thread(s) each, "
                f"precision {config.precision}, on {device}")
    return (f"batches of up to {config.max_batch} (waiting at most {config.max_wait_ms:g} ms), "
            f"{config.torch_threads} intra-op thread(s) ({config.threads_alone} for a request "
            f"alone), {config.decode_threads} decode thread(s), precision "
            f"{config.precision}, {config.program} program, on {device}")
