"""``pretune serve PATH``: predictions over HTTP with dynamic batching (``pretune.serve``), on uvicorn.

This module owns the server process: it checks the settings and the model path, binds the socket (a taken port
is a one-line error), starts uvicorn and turns its end into an exit status (0 after SIGTERM, once the requests
in flight are answered). With ``--workers N`` uvicorn's supervisor starts N worker processes on the one socket;
each loads its own copy of the model through ``worker_app``, which reads the settings from the environment.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket

from ..errors import ConfigError, ModelError, PretuneError, require

log = logging.getLogger("pretune")
TOKEN_ENV = "PRETUNE_SERVE_TOKEN"
CONFIG_ENV = "PRETUNE_SERVE_CONFIG"  # the settings, as JSON, for the worker processes of --workers N
VERBOSE_ENV = "PRETUNE_SERVE_VERBOSE"
STARTUP_FAILURE = 3  # uvicorn's status for a worker that failed before serving: its supervisor then stops


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH", help="a model folder, a variant folder that pretune compress wrote, or a "
                   "pretune run or compress folder (its recommended variant is served)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: a free port, logged at start)")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes sharing the port, each loading its own copy of the model (N times the "
                        "memory, N x --threads threads) before it takes connections, and batching only its own "
                        "requests; /health and /metrics answer for the process that takes the connection "
                        "(default: 1)")
    p.add_argument("--max-batch-size", type=int, default=32, help="texts per model call at most (default: 32)")
    p.add_argument("--max-wait-ms", type=float, default=5.0,
                   help="how long a text waits for the requests on their way to share its model call; with "
                   "none on the way it runs at once (default: 5)")
    p.add_argument("--max-length", type=int, default=None,
                   help="tokens per text (default: 128, or the model's positions if fewer)")
    p.add_argument("--on-long", choices=("truncate", "refuse"), default="truncate",
                   help="a text over --max-length: truncate it (token classification: cut it into windows, as "
                        "predict does) or refuse the request with 422 (default: truncate)")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000,
                   help="larger request bodies get 413 (default: 1000000)")
    p.add_argument("--max-texts", type=int, default=256, help="texts per request at most (default: 256)")
    p.add_argument("--max-queue", type=int, default=4096,
                   help="texts waiting for the model at most; a request beyond it gets 503 with Retry-After "
                        "(default: 4096)")
    p.add_argument("--token", default=None,
                   help=f"bearer token every route but /health requires (default: ${TOKEN_ENV}; prefer the "
                        "variable: a flag is visible to other users in the process list)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads of the model, per worker (default: 2)")
    p.add_argument("--device", default="cpu", help="device of the PyTorch formats: cpu (default), cuda, cuda:N")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16", "auto"),
                   help="precision of the PyTorch formats (default: fp32)")
    p.add_argument("--shutdown-timeout", type=float, default=30.0,
                   help="seconds the requests in flight get to finish after SIGTERM (default: 30)")


def run(args: argparse.Namespace) -> int:
    require("fastapi", "serve", "pretune serve")
    require("uvicorn", "serve", "pretune serve")
    from ..serve import ServeConfig, check
    from ..serve.model import inspect

    cfg = ServeConfig(path=args.path, host=args.host, port=args.port, workers=args.workers,
                      max_batch_size=args.max_batch_size, max_wait_ms=args.max_wait_ms, max_length=args.max_length,
                      on_long=args.on_long, max_body_bytes=args.max_body_bytes, max_texts=args.max_texts,
                      max_queue=args.max_queue,
                      token=args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None,
                      threads=args.threads, device=args.device, precision=args.precision,
                      shutdown_timeout=args.shutdown_timeout)
    check(cfg)
    target = inspect(cfg.path, cfg.max_length)  # a bad path is an error before the port is taken
    cfg.max_length = target.max_length
    sock = listen(cfg.host, cfg.port)
    host, port = sock.getsockname()[:2]
    log.info("listening on http://%s:%d (%s, variant %s, %s; %d worker%s, token %s); the API is at /docs", host,
             port, target.path, target.located.variant, target.spec.task, cfg.workers,
             "s" if cfg.workers > 1 else "", "required" if cfg.token else "off")
    if cfg.workers == 1:
        return _serve_here(cfg, target, sock)
    return _serve_workers(cfg, sock, args.verbose)


def listen(host: str, port: int) -> socket.socket:
    """A bound socket (uvicorn listens on it).

    Raises:
        ConfigError: the address is taken or not this machine's.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it. asyncio sets it on a connection only when the socket's proto is TCP, which
    # a socket made like this one does not say (proto 0); without it a response waits for the client's delayed ACK,
    # 40 ms on Linux (measured: 56 ms a request at batch 1 against 18 ms).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e}); choose another "
                          "--port (or --port 0 for a free one)") from None
    sock.set_inheritable(True)  # the worker processes of --workers N inherit it
    return sock


def _uvicorn_config(app, cfg, **kwargs):
    import uvicorn

    # log_config=None: pretune's console (pretune.cli.logs) shows uvicorn's warnings and errors, not its INFO lines
    return uvicorn.Config(app, log_config=None, access_log=False, server_header=False, lifespan="on",
                          timeout_graceful_shutdown=cfg.shutdown_timeout, **kwargs)


def _serve_here(cfg, target, sock: socket.socket) -> int:
    import uvicorn

    from ..serve.app import create_app

    failed: list[PretuneError] = []

    def stop(error: PretuneError) -> None:  # the model could not be loaded: nothing to serve
        failed.append(error)
        server.should_exit = True

    server = uvicorn.Server(_uvicorn_config(create_app(cfg, target, on_fatal=stop), cfg))
    # uvicorn handles SIGTERM and SIGINT (stop accepting, finish the requests in flight, stop the batcher), then
    # raises the signal again for the handler installed before: these note it, so that the end is a normal one
    # (exit status 0 after SIGTERM, 130 after Ctrl-C) rather than a kill or a KeyboardInterrupt traceback.
    received: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed:
        raise failed[0]
    if not server.started:
        raise PretuneError("the server did not start; its error is above")
    log.info("stopped")
    return 130 if signal.SIGINT in received else 0


def _serve_workers(cfg, sock: socket.socket, verbose: bool) -> int:
    import inspect

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    os.environ[CONFIG_ENV] = json.dumps(cfg.to_dict())  # the spawned workers read it (worker_app)
    os.environ[VERBOSE_ENV] = "1" if verbose else ""
    config = _uvicorn_config(f"{__name__}:worker_app", cfg, factory=True, workers=cfg.workers)
    # older uvicorn releases take the function each worker runs; newer ones build the worker's server themselves
    runs = {"target": uvicorn.Server(config).run} if "target" in inspect.signature(Multiprocess).parameters else {}
    supervisor = Multiprocess(config, sockets=[sock], **runs)
    supervisor.run()  # until SIGTERM or SIGINT; then each worker finishes its requests in flight
    if any(getattr(p, "exitcode", None) == STARTUP_FAILURE for p in supervisor.processes):
        raise ModelError(f"{cfg.path}: a worker could not load the model (its error is above); the server stopped")
    log.info("stopped")
    return 0


def _worker_failed(error: PretuneError) -> None:
    """A worker could not load the model: stop the whole server (a supervisor would start it again and again)."""
    log.error("pretune serve: error: %s", error)
    os.kill(os.getppid(), signal.SIGTERM)
    os._exit(STARTUP_FAILURE)


def worker_app():
    """The application of one worker process of ``--workers N`` (uvicorn calls it in each). A worker loads its
    model before it takes connections, so that the workers already loaded answer meanwhile."""
    from ..serve import ServeConfig
    from ..serve.app import create_app
    from ..serve.model import inspect
    from .logs import configure_logging

    configure_logging(os.environ.get(VERBOSE_ENV) == "1")
    cfg = ServeConfig.from_dict(json.loads(os.environ[CONFIG_ENV]))
    return create_app(cfg, inspect(cfg.path, cfg.max_length), on_fatal=_worker_failed, load_first=True)
