"""The REST API: POST /predict, GET /healthz, /readyz, /metrics.

Every client mistake gets a 4xx with ``{"error": code, "detail": message}``; 500 is left
for our own bugs. The request body is read within the upload limits (inference.edge.bodies: a
hard cap, a memory budget shared by every body in flight, read timeouts) before multipart
parsing, so an oversized upload is refused without spooling it to disk.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from inference.edge.bodies import BodyReader, UploadRefused
from inference.published.registry import Registry
from inference.serving.engine import Engine
from inference.serving.metrics import Metrics
from inference.serving.predict import BadImage

log = logging.getLogger(__name__)
# Routes that read their bodies with the BodyReader themselves; inference.edge.bodies.
# BoundedBodies reads every other body before the app sees it.
READS_ITS_OWN_BODY = frozenset({"/predict"})

def error(status: int, code: str, detail: str, headers: dict | None = None,
          **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail, **extra}, status_code=status,
                        headers=headers)


def no_model_message(registry: Registry) -> str:
    """For clients: the store's address stays out (the app's log names it)."""
    where = registry.model_name or "any model"
    return (f"No model is published yet ({where}). "
            "Train one: `make demo` on this machine, or `pulumi up` on a cluster; "
            f"this app checks every {registry.poll_seconds:g}s and loads it without a restart.")


async def parse_upload(request: Request, body: bytes,
                       max_bytes: int) -> bytes | JSONResponse:
    """The bytes of the multipart field ``file`` of ``body``, or the 4xx response explaining
    why not."""
    too_large = error(413, "file_too_large", f"the upload exceeds the {max_bytes / 1e6:g} MB limit")

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        return error(415 if body else 422, "multipart_required",
                     "send the image as multipart/form-data in the field 'file' "
                     f"(e.g. curl -F file=@cat.png); got content-type {content_type or 'none'!r}")
    try:
        form = await Request(request.scope, replay).form(max_files=4, max_fields=16)
    except Exception as e:  # noqa: BLE001  (python-multipart raises many types)
        return error(400, "malformed_multipart", f"the multipart body could not be parsed: {e}")
    try:
        return await read_file_field(form, max_bytes, too_large)
    finally:
        await form.close()  # every return path: the spooled temp files are freed at once


async def read_file_field(form: Any, max_bytes: int, too_large: JSONResponse) -> bytes | JSONResponse:
    """The bytes of the form's ``file`` upload, or the 4xx response explaining why not."""
    upload = form.get("file")
    if upload is None:
        return error(422, "missing_file_field",
                     "no multipart field named 'file'; send the image as -F file=@image.png",
                     fields_received=sorted(form.keys()))
    if not isinstance(upload, UploadFile):
        return error(422, "file_field_not_a_file",
                     "the field 'file' must be a file upload, not a text value")
    data = await upload.read()
    return too_large if len(data) > max_bytes else data


async def classify_upload(engine: Engine, current: Any, request: Request, body: bytes,
                          max_bytes: int) -> dict[str, Any] | JSONResponse:
    """The answer for one received body, or the 4xx response explaining why not."""
    data = await parse_upload(request, body, max_bytes)
    if isinstance(data, JSONResponse):
        return data
    try:
        return await engine.classify(current, data)
    except BadImage as e:
        return error(e.status, "image_too_large" if e.status == 413 else "bad_image", str(e))


def build_router(registry: Registry, metrics: Metrics, engine: Engine,
                 bodies: BodyReader) -> APIRouter:
    router = APIRouter()

    @router.post("/predict", summary="Classify one image (multipart field 'file')")
    async def predict_endpoint(request: Request) -> Response:
        current = registry.current  # one read: this request uses one version throughout
        if current is None:
            return error(503, "no_model", no_model_message(registry))
        # In flight from before the upload is read (see Engine._run_batch); the body's
        # share of the upload budget is held until the answer (inference.edge.bodies).
        with engine.request():
            try:
                async with bodies.body(request) as body:
                    result = await classify_upload(engine, current, request, body,
                                                   bodies.limits.max_bytes)
            except UploadRefused as e:
                return error(e.status, e.code, e.detail, headers=e.headers)
        if isinstance(result, JSONResponse):
            return result
        metrics.observe_prediction(current.version, result["prediction"], "api")
        return JSONResponse(result)

    @router.get("/healthz", summary="Liveness: the process answers")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="Readiness: serving what the store holds")
    def readyz() -> Response:
        # Ready = serving what the store holds. Before the first model is published the
        # pod serves its "no model yet" page, so it must be Ready or the Service would
        # hide that page for the whole first training run. Not ready while a published
        # version is still loading or the store can't be reached. Open to anyone (the
        # kubelet's probe has no token): "up" and the served version only, never the
        # store's address or its error text (the app's log has both).
        current = registry.current
        if current is None and registry.nothing_published:
            return JSONResponse({"status": "waiting", "model": None, "version": None})
        if current is None:
            return JSONResponse({"status": "unavailable", "model": None, "version": None},
                                status_code=503)
        return JSONResponse({"status": "ready", "model": current.name,
                             "version": current.version})

    @router.get("/metrics", summary="Prometheus metrics")
    def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    return router
