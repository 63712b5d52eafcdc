"""``python -m inference serve``: the web app and REST API on one port; ``monitor``: one
drift check of the served version; ``demo-check``: `make demo`'s knobs."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path

from inference import democheck
from inference.edge.listening import ServeError, listen, listening_at
from inference.monitoring import cli as monitoring_cli
from inference.monitoring import traffic
from trainer.contract.layout import AUTH_TOKEN_ENV, MLFLOW_UI_URL_ENV

log = logging.getLogger("inference")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m inference",
                                     description="Serve the newest published model.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the Gradio UI and the REST API")
    serve.add_argument("--store", default=os.environ.get("TRAINSTACK_STORE"),
                       help="s3://HOST:PORT or a local directory [$TRAINSTACK_STORE]")
    serve.add_argument("--host", default="0.0.0.0",
                       help="address to listen on: 0.0.0.0 every interface (a pod, a LAN), "
                            "127.0.0.1 this machine only [0.0.0.0]")
    serve.add_argument("--port", type=int, default=7860,
                       help="TCP port to listen on; 0 picks a free one [7860]")
    serve.add_argument("--model-name", default=os.environ.get("TRAINSTACK_MODEL_NAME") or None,
                       help="<model>-<dataset> to serve [$TRAINSTACK_MODEL_NAME; "
                            "default: the newest model under models/*/latest.json]")
    serve.add_argument("--poll-seconds", type=float, default=15.0,
                       help="how often to check latest.json for a new version [15]")
    serve.add_argument("--max-upload-mb", type=float, default=10.0,
                       help="largest accepted upload; bigger gets 413 [10]")
    serve.add_argument("--cache-dir", type=Path, default=None,
                       help="where downloaded versions are kept [a temp dir]")
    serve.add_argument("--mlflow-ui-url", default=env(MLFLOW_UI_URL_ENV, "") or None,
                       help="http(s) address users open MLflow at, for the links to each "
                            f"version's MLflow run [${MLFLOW_UI_URL_ENV}; default: the "
                            "address the trainer logged to]")
    serve.add_argument("--concurrency", type=int, default=16,
                       help="UI predictions running at once (Gradio's default is 1) [16]")
    add_serving_args(serve)
    serve.add_argument("--log-level", default=os.environ.get("TRAINSTACK_LOG_LEVEL", "INFO"),
                       help="logging level, as for the trainer [$TRAINSTACK_LOG_LEVEL or INFO]")
    check = sub.add_parser("demo-check", help="check `make demo`'s knobs before it starts")
    democheck.add_arguments(check)
    monitor = sub.add_parser("monitor", help="one drift check of the served version; prints "
                                             "drift=... estimated_accuracy=... n=...")
    monitoring_cli.add_arguments(monitor)
    traffic_parser = sub.add_parser("traffic", help="send a running app its dataset's images, "
                                                    "or shifted ones (make demo-traffic)")
    traffic.add_arguments(traffic_parser)
    return parser.parse_args(argv)


def env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def add_serving_args(serve: argparse.ArgumentParser) -> None:
    """How predictions are computed (docs/architecture.md, "Serving")."""
    group = serve.add_argument_group("serving")
    group.add_argument("--batching", choices=["on", "off"],
                       default=env("TRAINSTACK_BATCHING", "on"),
                       help="on: concurrent requests share forward passes; off: each request "
                            "runs its own (the old behaviour) [$TRAINSTACK_BATCHING or on]")
    group.add_argument("--max-batch", type=int, default=env("TRAINSTACK_MAX_BATCH", "32"),
                       help="requests per forward pass at most [$TRAINSTACK_MAX_BATCH or 32]")
    group.add_argument("--max-batch-wait-ms", type=float,
                       default=env("TRAINSTACK_MAX_BATCH_WAIT_MS", "5"),
                       help="the longest a batch waits for requests still decoding; a lone "
                            "request never waits [$TRAINSTACK_MAX_BATCH_WAIT_MS or 5]")
    group.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                       default=env("TRAINSTACK_PRECISION", "auto"),
                       help="auto: bf16 where the CPU/GPU has it natively and the version's "
                            "examples get the same classes as in fp32 [$TRAINSTACK_PRECISION "
                            "or auto]")
    group.add_argument("--decode", choices=["draft", "full"],
                       default=env("TRAINSTACK_DECODE", "draft"),
                       help="draft: JPEGs decoded at reduced size, as the trainer reads them; "
                            "full: every pixel (the app before batching, the benchmark's "
                            "baseline) [$TRAINSTACK_DECODE or draft]")
    group.add_argument("--program", choices=["frozen", "eager"],
                       default=env("TRAINSTACK_PROGRAM", "frozen"),
                       help="frozen: the forward pass as one frozen graph, run without the "
                            "GIL (checked against the published program, which is served "
                            "where they differ); eager: the program as published "
                            "[$TRAINSTACK_PROGRAM or frozen]")
    group.add_argument("--device", default=None,
                       help="cpu or cuda[:N] [cuda when a GPU is visible, else cpu]")
    group.add_argument("--torch-threads", type=int, default=None,
                       help="intra-op threads [batching: the usable CPUs (cgroup quota), at "
                            "most 16; off: half of them, 1-4]")
    group.add_argument("--lone-threads", type=int, default=None,
                       help="intra-op threads of a request that arrives alone (no other "
                            "prediction in flight, so the other CPUs are idle) [the usable "
                            "CPUs, at most 16]")
    group.add_argument("--decode-threads", type=int, default=None,
                       help="images decoded at once [the usable CPUs]")
    group.add_argument("--decode-memory-mb", type=float, default=512.0,
                       help="memory that concurrent decodes may use together; a bigger "
                            "decode gets 413 [512]")
    group.add_argument("--upload-memory-mb", type=float, default=None,
                       help="memory that POST /predict bodies in flight may use together; "
                            "at least one whole upload [128, or one --max-upload-mb upload "
                            "when that is more]")
    group.add_argument("--upload-cache-mb", type=float, default=256.0,
                       help="UI uploads kept on disk at most; the oldest go first [256]")
    group.add_argument("--upload-cache-max-age-s", type=float, default=600.0,
                       help="UI uploads older than this are deleted [600]")
    group.add_argument("--monitor", choices=["on", "off"],
                       default=env("TRAINSTACK_MONITOR", "on"),
                       help="on: record each prediction's summary (never the image) and check "
                            "it for drift against the version's reference [on]")
    group.add_argument("--monitor-window", type=int,
                       default=env("TRAINSTACK_MONITOR_WINDOW", "256"),
                       help="predictions per drift check [256]")
    group.add_argument("--monitor-window-s", type=float,
                       default=env("TRAINSTACK_MONITOR_WINDOW_S", "60"),
                       help="a check at least this often while predictions come [60]")


def serving_settings(args: argparse.Namespace) -> dict:
    optional = {"device": args.device, "decode_threads": args.decode_threads,
                "lone_threads": args.lone_threads, "upload_memory_mb": args.upload_memory_mb}
    return {"batching": args.batching == "on", "max_batch": args.max_batch,
            "max_batch_wait_ms": args.max_batch_wait_ms, "precision": args.precision,
            "decode": args.decode, "program": args.program,
            "torch_threads": args.torch_threads, "decode_memory_mb": args.decode_memory_mb,
            "upload_cache_mb": args.upload_cache_mb,
            "upload_cache_max_age_s": args.upload_cache_max_age_s,
            "monitor": args.monitor == "on", "monitor_window": args.monitor_window,
            "monitor_window_s": args.monitor_window_s,
            **{k: v for k, v in optional.items() if v is not None}}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "demo-check":
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
        return democheck.main(args)
    if args.command == "traffic":
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
        logging.getLogger("httpx").setLevel(logging.WARNING)
        return traffic.main(args)
    if args.command == "monitor":
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        return monitoring_cli.main(args)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.store:
        log.error("no store given: pass --store or set TRAINSTACK_STORE "
                  "(s3://HOST:PORT or a local directory)")
        return 2
    try:
        sock = listen(args.host, args.port)
    except ServeError as e:
        log.error("%s", e)
        return 2
    with sock:
        return serve(args, sock)


def serve(args: argparse.Namespace, sock: socket.socket) -> int:
    import uvicorn

    from inference.app import Settings, create_app
    from trainer.contract.errors import TrainstackError

    try:
        settings = Settings(
            store=args.store, host=args.host, port=sock.getsockname()[1],
            model_name=args.model_name, poll_seconds=args.poll_seconds,
            max_upload_mb=args.max_upload_mb, cache_dir=args.cache_dir,
            concurrency=args.concurrency, auth_token=os.environ.get(AUTH_TOKEN_ENV),
            mlflow_ui_url=args.mlflow_ui_url, **serving_settings(args))
        app = create_app(settings)
    except TrainstackError as e:  # misconfiguration (bad URL, missing credentials): say so
        log.error("%s", e)
        return 2
    log.info("web app listening on %s (REST: POST /predict, GET /healthz /readyz /metrics)",
             listening_at(sock))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning",
                                           timeout_graceful_shutdown=5))
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
