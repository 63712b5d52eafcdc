"""The REST API: POST /predict, GET /healthz, /readyz, /metrics.

Every client mistake gets a 4xx with ``{"error": code, "detail": message}``; 500 is left
for our own bugs. The request body is read with a hard cap before multipart parsing, so
an oversized upload is refused without spooling it to disk.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile

from .engine import Engine
from .metrics import Metrics
from .predict import BadImage
from .registry import Registry

log = logging.getLogger(__name__)

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers on top of the file itself


def error(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail, **extra}, status_code=status)


def no_model_message(registry: Registry) -> str:
    """For clients: the store's address stays out (the app's log names it)."""
    where = registry.model_name or "any model"
    return (f"No model is published yet ({where}). "
            "Train one: `make demo` on this machine, or `pulumi up` on a cluster; "
            f"this app checks every {registry.poll_seconds:g}s and loads it without a restart.")


class TooLarge(Exception):
    pass


async def read_capped_body(request: Request, cap: int) -> bytes:
    """The raw body, refusing (TooLarge) as soon as it exceeds ``cap`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > cap:
            raise TooLarge
    return bytes(body)


async def parse_upload(request: Request, max_bytes: int) -> bytes | JSONResponse:
    """The bytes of the multipart field ``file``, or the 4xx response explaining why not."""
    limit_mb = max_bytes / 1e6
    too_large = error(413, "file_too_large", f"the upload exceeds the {limit_mb:g} MB limit")
    try:
        body = await read_capped_body(request, max_bytes + MULTIPART_OVERHEAD)
    except TooLarge:
        return too_large

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


def build_router(registry: Registry, metrics: Metrics, engine: Engine,
                 max_upload_bytes: int) -> APIRouter:
    router = APIRouter()

    @router.post("/predict", summary="Classify one image (multipart field 'file')")
    async def predict_endpoint(request: Request) -> Response:
        current = registry.current  # one read: this request uses one version throughout
        if current is None:
            return error(503, "no_model", no_model_message(registry))
        with engine.request():  # from before the upload is read: see Engine._run_batch
            data = await parse_upload(request, max_upload_bytes)
            if isinstance(data, JSONResponse):
                return data
            try:
                result = await engine.classify(current, data)
            except BadImage as e:
                return error(e.status, "image_too_large" if e.status == 413 else "bad_image",
                             str(e))
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
