"""``python -m inference serve``: the web app and REST API on one port."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .app import Settings, default_torch_threads

log = logging.getLogger("inference")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m inference",
                                     description="Serve the newest published model.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the Gradio UI and the REST API")
    serve.add_argument("--store", default=os.environ.get("TRAINSTACK_STORE"),
                       help="s3://HOST:PORT or a local directory [$TRAINSTACK_STORE]")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=7860)
    serve.add_argument("--model-name", default=os.environ.get("TRAINSTACK_MODEL_NAME") or None,
                       help="<model>-<dataset> to serve [$TRAINSTACK_MODEL_NAME; "
                            "default: the newest model under models/*/latest.json]")
    serve.add_argument("--poll-seconds", type=float, default=15.0,
                       help="how often to check latest.json for a new version [15]")
    serve.add_argument("--max-upload-mb", type=float, default=10.0,
                       help="largest accepted upload; bigger gets 413 [10]")
    serve.add_argument("--cache-dir", type=Path, default=None,
                       help="where downloaded versions are kept [a temp dir]")
    serve.add_argument("--torch-threads", type=int, default=default_torch_threads(),
                       help="intra-op threads per prediction [half the usable CPUs, 1-4]")
    serve.add_argument("--concurrency", type=int, default=16,
                       help="UI predictions running at once (Gradio's default is 1) [16]")
    serve.add_argument("--log-level", default=os.environ.get("TRAINSTACK_LOG_LEVEL", "INFO"),
                       help="logging level, as for the trainer [$TRAINSTACK_LOG_LEVEL or INFO]")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.store:
        log.error("no store given: pass --store or set TRAINSTACK_STORE "
                  "(s3://HOST:PORT or a local directory)")
        return 2
    settings = Settings(store=args.store, host=args.host, port=args.port,
                        model_name=args.model_name, poll_seconds=args.poll_seconds,
                        max_upload_mb=args.max_upload_mb, cache_dir=args.cache_dir,
                        torch_threads=args.torch_threads, concurrency=args.concurrency)
    import uvicorn

    from trainer.errors import TrainstackError

    from .app import create_app

    try:
        app = create_app(settings)
    except TrainstackError as e:  # misconfiguration (bad URL, missing credentials): say so
        log.error("%s", e)
        return 2
    log.info("web app on http://%s:%d/ (REST: POST /predict, GET /healthz /readyz /metrics)",
             "localhost" if settings.host == "0.0.0.0" else settings.host, settings.port)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning",
                timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
