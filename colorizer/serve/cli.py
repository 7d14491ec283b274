"""``colorizer serve``: the options and the command (the service itself is ``colorizer.serve.app``).

    colorizer serve                                   # the bundled model on 127.0.0.1:8000, the page at /
    colorizer serve ov_bf16/model.xml --port 9000     # any model load_runner resolves
    colorizer serve runs/demo --max-batch 8 --max-wait-ms 5 --kernels native

The model is loaded before the port is bound (a bad model is one error line and exit 2), then warmed up;
``/readyz`` answers 200 and the command prints ``ready: URL`` only after the warm-up. SIGTERM or Ctrl-C:
stop accepting, finish what is queued and in flight, exit 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading

API_KEY_ENV = "COLORIZER_API_KEY"


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    from colorizer.runtime.device import add_device_options
    from colorizer.serve.policy import BATCH_SHAPES
    from colorizer.serve.settings import ServeSettings

    d = ServeSettings()
    p.add_argument(
        "model",
        nargs="?",
        default=None,
        help="a bundled model's name, a training run folder, a checkpoint file, or an exported engine (.onnx, "
        "OpenVINO model.xml, .plan) (default: the bundled model)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 picks a free one and prints it)")
    add_device_options(p)
    p.add_argument(
        "--max-batch",
        type=int,
        default=None,
        help="most pictures per model call (default: per device and format, colorizer.serve.policy: 1 on a CPU, "
        "where batches were measured not to pay; 8 on a GPU)",
    )
    p.add_argument(
        "--openvino-requests",
        type=_requests,
        default=None,
        metavar="N|auto",
        help="OpenVINO model only: compile for throughput and run up to N pictures at once as separate requests "
        "(auto: the plugin's choice); --max-batch then defaults to N (default: one request at a time, compiled "
        "for latency, which served more images/s on a 2-core CPU)",
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=None,
        help="longest wait for a batch to fill, in ms (default: per device, colorizer.serve.policy: 0 on a CPU, "
        "where requests that arrive during a model call are batched when it ends; 5 on a GPU; never waits with "
        "--max-batch 1)",
    )
    p.add_argument(
        "--batch-shape",
        choices=BATCH_SHAPES,
        default=None,
        help="fixed: pad every batch to --max-batch pictures, so a picture is bit-identical alone or batched; "
        "any: run batches as they come (default: fixed for torch on a CPU; any for OpenVINO, whose CPU plugin "
        "gives a picture the same bits in any batch, on a GPU, and with --openvino-requests)",
    )
    p.add_argument(
        "--streams",
        type=int,
        default=None,
        help="torch model only: when several pictures wait, run up to N side by side on threads/N threads each "
        "(a picture alone still gets every thread); opened only if the warm-up finds a picture's bits the same "
        "both ways (default: per device, colorizer.serve.policy: one per thread on a CPU of up to 2 threads, "
        "else 1)",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=d.max_queue,
        help=f"pictures that may wait; more get 503 with Retry-After (default {d.max_queue})",
    )
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=d.max_upload_mb,
        help=f"largest request body in MB; larger gets 413 (default {d.max_upload_mb:g})",
    )
    p.add_argument(
        "--max-pixels",
        type=int,
        default=d.max_pixels,
        help=f"largest picture (width * height); larger gets 413 (default {d.max_pixels} = 2048 x 2048)",
    )
    p.add_argument(
        "--upload-timeout-s",
        type=float,
        default=d.upload_timeout_s,
        help=f"seconds an upload may take to arrive; slower gets 408 (default {d.upload_timeout_s:g})",
    )
    p.add_argument(
        "--api-key",
        default=None,
        help=f"require 'Authorization: Bearer KEY' on /v1/* (default: the {API_KEY_ENV} environment variable; "
        "none: open). Prefer the variable: a command line is visible to other users of the machine",
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        help="allow browser pages from this origin (repeatable; default: no CORS)",
    )
    p.add_argument(
        "--warmup-size", type=int, default=d.warmup_size, help=f"side of the warm-up pictures (default {d.warmup_size})"
    )
    p.add_argument("--access-log", action="store_true", help="log every request (default: errors and lifecycle only)")
    p.add_argument(
        "--drain-timeout-s",
        type=float,
        default=120.0,
        help="at SIGTERM / Ctrl-C, seconds to finish queued and in-flight requests before exiting (default 120)",
    )
    p.set_defaults(fn=cmd_serve)


def _requests(text: str):
    """--openvino-requests: a positive number or auto."""
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number or auto, got {text!r}")
    return int(text)


def settings_from_args(args, runner):
    """ServeSettings from the parsed options, the policy filling what was not given."""
    from colorizer.errors import ConfigError
    from colorizer.limits import check_size
    from colorizer.serve.policy import (
        FIXED,
        default_batch_shape,
        default_max_batch,
        default_max_wait_ms,
        default_streams,
    )
    from colorizer.serve.settings import ServeSettings

    device_type = runner.device.type
    max_batch = args.max_batch if args.max_batch is not None else default_max_batch(device_type, runner.format, runner)
    max_wait_ms = args.max_wait_ms if args.max_wait_ms is not None else default_max_wait_ms(device_type)
    streams = args.streams
    if streams is None:
        import torch

        streams = default_streams(device_type, runner.format, torch.get_num_threads())
    elif streams > 1 and runner.format != "torch":
        hint = " (--openvino-requests runs OpenVINO's own)" if runner.format == "openvino" else ""
        raise ConfigError(f"streams is for a torch model; this one is {runner.format}{hint}", option="streams")
    for name, value, low in (
        ("max_batch", max_batch, 1),
        ("streams", streams, 1),
        ("max_queue", args.max_queue, 1),
        ("max_pixels", args.max_pixels, 1),
    ):
        if value < low:
            raise ConfigError(f"{name} must be at least {low}, got {value}", option=name)
    for name, value in (
        ("max_wait_ms", max_wait_ms),
        ("max_upload_mb", args.max_upload_mb),
        ("upload_timeout_s", args.upload_timeout_s),
    ):
        if not value >= 0:
            raise ConfigError(f"{name} must be a number >= 0, got {value}", option=name)
    check_size(args.warmup_size, "warmup_size")
    shape = args.batch_shape or default_batch_shape(device_type, runner)
    return ServeSettings(
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_queue=args.max_queue,
        max_upload_mb=args.max_upload_mb,
        max_pixels=args.max_pixels,
        upload_timeout_s=args.upload_timeout_s,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        cors_origins=tuple(args.cors_origin),
        warmup_size=args.warmup_size,
        fixed_batch=shape == FIXED and max_batch > 1,
        streams=streams,
    )


def _bind(host: str, port: int) -> socket.socket:
    from colorizer.errors import ConfigError

    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be from 0 to 65535, got {port}", option="port")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"host {host!r}: not an address of this machine ({exc.strerror})", option="host") from None
    family, kind, proto, _, address = infos[0]
    # The protocol number matters: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on connections of a
    # socket whose proto is IPPROTO_TCP. With proto 0 every answer on a kept-alive connection waited for the
    # client's delayed ACK: 44 ms for GET /healthz instead of under 1 ms (measured on loopback).
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc})", option="port") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _in_a_thread_of_its_own(fn):
    """``fn()`` in a short-lived thread, its exception re-raised here. Loading a model runs parallel torch ops,
    and torch keeps an OpenMP team for each thread that does: a team left in this (the event loop's) thread
    beside the batcher's would put more OpenMP threads in the process than cores, and libgomp then stops its
    threads spinning between ops (measured: about 580 context switches per picture instead of 15, and the
    model call 10-40% slower). A thread's team ends with the thread."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=run, name="colorizer-load")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _graceful_server(uvicorn):
    """uvicorn.Server that, after a SIGTERM / Ctrl-C it handled (stop accepting, drain, lifespan shutdown),
    returns instead of raising the signal again: the drain is the graceful end, so the command exits 0
    (uvicorn re-raises captured signals for the previous handler, which for our commands means exit 143)."""
    import contextlib

    class GracefulServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                yield
                self.stopped_by = list(getattr(self, "_captured_signals", ()))
                if hasattr(self, "_captured_signals"):
                    self._captured_signals.clear()

    return GracefulServer


def cmd_serve(args) -> int:
    from colorizer.errors import ColorizerError, MissingDependencyError

    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import python_multipart  # noqa: F401
        import swagger_ui_bundle  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise MissingDependencyError(
            f"colorizer serve needs the serve extra (missing {exc.name}): pip install 'colorizer[serve]'"
        ) from None
    from colorizer.errors import ConfigError
    from colorizer.runtime.load import load_runner, resolve_model
    from colorizer.serve.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model = args.model
    if model is None:
        from colorizer.pretrained import DEFAULT

        model = DEFAULT
    ref = resolve_model(model)
    options = {}
    if args.openvino_requests is not None:
        if ref.format != "openvino":
            raise ConfigError(
                f"openvino_requests is for an OpenVINO model; {model} is {ref.format}", option="openvino_requests"
            )
        options["requests"] = args.openvino_requests
    runner = _in_a_thread_of_its_own(lambda: load_runner(ref, device=args.device, kernels=args.kernels, **options))
    settings = settings_from_args(args, runner)
    sock = _bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    app = create_app(runner, settings)
    config = uvicorn.Config(
        app,
        log_level="info",
        access_log=args.access_log,
        timeout_graceful_shutdown=args.drain_timeout_s,
        timeout_keep_alive=5,
    )
    server = _graceful_server(uvicorn)(config)
    service = app.state.service
    key = "on (Bearer token)" if settings.api_key else "off"
    print(
        f"colorizer serve: {runner!r}, max batch {settings.max_batch} "
        f"({'fixed shape' if settings.fixed_batch else 'any shape'}), wait {settings.max_wait_ms:g} ms, "
        f"streams {settings.streams}, "
        f"queue {settings.max_queue}, API key {key}; listening on {url}, warming up",
        file=sys.stderr,
        flush=True,
    )

    def announce():
        service.warmed.wait()
        if service.warmup_error is not None:
            server.should_exit = True
        else:
            print(f"ready: {url}", file=sys.stderr, flush=True)

    threading.Thread(target=announce, name="colorizer-announce", daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if service.warmup_error is not None:
        raise ColorizerError(f"the model failed to warm up: {service.warmup_error}")
    if getattr(server, "stopped_by", None):
        print("colorizer serve: stopped; every queued and in-flight request was answered", file=sys.stderr)
    return 0
