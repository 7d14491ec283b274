"""The service's FastAPI application: routes, limits, errors, metrics; the model behind a Batcher.

    app = create_app(runner, ServeSettings(max_batch=4))    # runner: colorizer.runtime.load.load_runner(...)

Routes: ``POST /v1/colorize`` (multipart sketch + reference or palette, seed, size -> PNG), ``POST
/v1/palette`` (image -> 9 hex colors), ``GET /v1/model``, ``GET /healthz``, ``GET /readyz``, ``GET
/metrics`` (Prometheus text, prometheus-client on a registry of this app's own), ``/`` (the page, static
files from ``colorizer/serve/static``), ``/docs`` (OpenAPI).

Inputs go through the same checks as ``colorizer colorize`` (``colorizer.data.images.decode_image``,
``colorizer.palette.parse_palette``, ``colorizer.limits.check_seed`` / ``check_size``): a bad one is a 400
with the same message. Uploads are read into memory only (never a temporary file) and capped at
``max_upload_mb`` while they arrive (413); a picture over ``max_pixels`` is a 413 from its header, before
it is decoded. Every error is JSON ``{"error": "<one line>"}``; a bug is a 500 whose id the log prints with
the traceback.

Threads: the event loop only parses, waits and answers. Decoding, the model input, the picture back to
uint8 and PNG encoding (PIL and numpy, no torch op) run in the worker thread pool (``anyio.to_thread``);
every torch operation (a reference's palette, a resize to ``size`` and back, the model) runs in the
Batcher's worker threads, so the process has one OpenMP team (``colorizer.serve.batcher``; with streams,
pictures that wait run side by side on fewer threads each, once ``Service.check_streams`` found the bits the
same).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import logging
import threading
import time
import uuid
import zlib
from pathlib import Path

import anyio
import numpy as np
import torch
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from colorizer.errors import ColorizerError, ConfigError, one_line
from colorizer.serve.batcher import Batcher, QueueFull, Stopped
from colorizer.serve.settings import ServeSettings

log = logging.getLogger("colorizer.serve")
STATIC = Path(__file__).parent / "static"
MiB = 1 << 20


class HTTPError(Exception):
    """An answer other than 200: ``status`` with ``{"error": message}`` and optional headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": one_line(message) or "error"}, status_code=status, headers=headers)


class Metrics:
    """The Prometheus series of one app (a registry of its own, so several apps can live in one process)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "colorizer_http_requests", "HTTP requests by route, method and status", ["route", "method", "status"],
            registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "colorizer_http_request_duration_seconds", "Time from request to response, by route", ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120), registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "colorizer_batch_size", "Pictures per model call", buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64),
            registry=r,
        )  # fmt: skip
        self.batch_seconds = Histogram(
            "colorizer_batch_duration_seconds", "Seconds one model call (one batch) takes",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60), registry=r,
        )  # fmt: skip
        self.stage_seconds = Histogram(
            "colorizer_stage_duration_seconds",
            "Seconds a colorize request spends per stage: read (upload), decode, palette, queue, model, encode",
            ["stage"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )  # fmt: skip
        self.pictures_by_threads = Counter(
            "colorizer_pictures_by_threads", "Pictures run, by the threads their model call ran on (streams)",
            ["threads"], registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge("colorizer_queue_depth", "Pictures waiting for a batch", registry=r)
        self.in_flight = Gauge("colorizer_colorize_in_flight", "Colorize requests being handled", registry=r)
        self.ready = Gauge("colorizer_ready", "1 once the model is loaded and warmed up", registry=r)


class Service:
    """The model, its batcher and its state; one per app (``app.state.service``)."""

    def __init__(self, runner, settings: ServeSettings):
        self.runner, self.settings = runner, settings
        self.metrics = Metrics()
        self.ready = threading.Event()  # warmed up without error: /readyz is 200
        self.warmed = threading.Event()  # the warm-up ended (check warmup_error)
        self.warmup_error: BaseException | None = None
        self.batcher = Batcher(
            self._run_batch,
            max_batch=settings.max_batch,
            max_wait_s=settings.max_wait_ms / 1000.0,
            max_queue=settings.max_queue,
            streams=settings.streams,
            threads=settings.threads,
            on_batch=self._on_batch,
            on_depth=self.metrics.queue_depth.set,
        )
        self._info: dict | None = None

    def _run_batch(self, sketches: torch.Tensor, palettes: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        n = sketches.shape[0]
        if self.settings.fixed_batch and n < self.settings.max_batch:
            # One batch shape for every call: a picture's bits do not depend on how many came with it.
            pad = self.settings.max_batch - n
            sketches = torch.cat([sketches, sketches[-1:].expand(pad, -1, -1, -1)])
            palettes = torch.cat([palettes, palettes[-1:].expand(pad, -1, -1)])
            seeds = seeds + [seeds[-1]] * pad
        return self.runner.colorize(sketches, palettes, seeds)[:n]

    def _on_batch(self, size: int, seconds: float, threads: int) -> None:
        self.metrics.batch_size.observe(size)
        self.metrics.batch_seconds.observe(seconds)
        self.metrics.pictures_by_threads.labels(str(threads)).inc(size)

    def check_streams(self) -> bool:
        """Open the batcher's streams if the model gives a picture the same bits on the streams' threads as
        alone on all threads (so a picture's bits never depend on how busy the service was); else stay at
        one stream and log why. Asks the runner to keep its bits across thread counts first
        (``Runner.keep_bits_across_thread_counts``; undone when the check fails), then runs a square picture
        of the warm-up size and one 128 px taller (whose deepest level is 3 by 2 pixels at 256: odd small
        levels are where oneDNN's order of summation followed the thread count) each way, in the lead."""
        from colorizer.limits import SIZE_MULTIPLE

        batcher = self.batcher
        if batcher.streams == 1:
            return False
        self.runner.keep_bits_across_thread_counts(True)
        side = self.settings.warmup_size
        palette = torch.arange(27, dtype=torch.uint8).reshape(1, 9, 3) * 9
        differ = []
        for height in (side, side + SIZE_MULTIPLE):
            sketch = torch.linspace(-1, 1, 3 * height * side).reshape(1, 3, height, side)

            def colorize(threads, sketch=sketch):
                return batcher.call(lambda: self._run_batch(sketch, palette, [0]), threads=threads).result()

            alone, side_by_side = colorize(batcher.threads), colorize(batcher.narrow_threads)
            if not torch.equal(alone, side_by_side):
                differ.append(float((alone - side_by_side).abs().nan_to_num(float("inf")).max()))
        if differ:
            self.runner.keep_bits_across_thread_counts(False)
            log.warning(
                "one stream: the model's pictures on %d and on %d threads differ (by up to %.1e), so pictures run "
                "one at a time on all threads",
                batcher.threads, batcher.narrow_threads, max(differ),
            )  # fmt: skip
            return False
        batcher.open_streams()
        log.info("%d streams: pictures run side by side on %d thread(s) each when several wait",
                 batcher.streams, batcher.narrow_threads)  # fmt: skip
        return True

    def warm_up(self) -> None:
        """Run the model once per batch shape the service will use, then mark it ready."""
        try:
            side = self.settings.warmup_size
            shapes = {1, self.settings.max_batch} if not self.settings.fixed_batch else {self.settings.max_batch}
            # In the batcher's thread, which runs all tensor work of the service (colorizer.serve.batcher):
            # the warm-up readies that thread's own OpenMP team. Requests get 503 until ready is set.
            self.batcher.start()
            for n in sorted(shapes):
                sketches = torch.ones(n, 3, side, side)
                palettes = torch.full((n, 9, 3), 128, dtype=torch.uint8)
                self.batcher.call(
                    lambda s=sketches, p=palettes: self.runner.colorize(s, p, list(range(len(s))))
                ).result()
            self.check_streams()
            self.info()  # hashes the weights file once, here rather than in the first /v1/model request
            self.ready.set()
            self.metrics.ready.set(1)
            log.info("ready: %r warmed up at %d px", self.runner, side)
        except BaseException as exc:  # noqa: BLE001 - kept for /readyz and the log; the CLI stops on it
            self.warmup_error = exc
            log.exception("warm-up failed")
        finally:
            self.warmed.set()

    def info(self) -> dict:
        if self._info is None:
            s = self.settings
            described = self.runner.describe()
            described.setdefault("limits", {})
            described["limits"] = {
                **described["limits"],
                "max_upload_mb": s.max_upload_mb,
                "max_pixels": s.max_pixels,
                "max_batch": s.max_batch,
                "max_wait_ms": s.max_wait_ms,
                "max_queue": s.max_queue,
                "fixed_batch": s.fixed_batch,
                "streams": self.batcher.open_streams_count,
                "threads": self.batcher.threads,
            }
            self._info = described
        return self._info


# --- request parsing ----------------------------------------------------------------------------------


class _InMemoryMultiPartParser(MultiPartParser):
    """Starlette's parser with the spooled files kept in memory: the body is capped before it gets here,
    so no upload is ever written to a temporary file on disk."""

    spool_max_size = 1 << 62


async def read_form(request: Request, settings: ServeSettings) -> dict[str, bytes | str]:
    """The multipart (or urlencoded) fields of ``request``: files as bytes, fields as str.

    413 when the body is over ``max_upload_mb`` (from Content-Length at once, else while it arrives); 408
    when it does not arrive within ``upload_timeout_s``; 400 for a body that is not a form.
    """
    limit = int(settings.max_upload_mb * MiB)
    too_big = f"upload over the limit of {settings.max_upload_mb:g} MB"
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise HTTPError(413, f"{too_big} ({int(length) / MiB:.1f} MB)")
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        got = content_type or "no content type"
        raise HTTPError(400, f"expected a multipart/form-data body (the pictures as files), got {got!r}")

    async def read_all() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, too_big)
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        body = await asyncio.wait_for(read_all(), settings.upload_timeout_s)
    except asyncio.TimeoutError:
        raise HTTPError(408, f"the upload did not finish within {settings.upload_timeout_s:g} s") from None
    except ClientDisconnect:  # the client went away mid-upload: not a bug, nobody reads the answer
        raise HTTPError(400, "the client closed the connection during the upload") from None

    async def once():
        yield body

    parser = _InMemoryMultiPartParser(Headers(scope=request.scope), once(), max_files=4, max_fields=16,
                                      max_part_size=64 * 1024)  # fmt: skip
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise HTTPError(400, f"malformed multipart body: {exc.message}") from None
    fields: dict[str, bytes | str] = {}
    try:
        for name, value in form.multi_items():
            if name in fields:
                raise HTTPError(400, f"{name} given more than once")
            fields[name] = value if isinstance(value, str) else await value.read()
    finally:
        await form.close()
    return fields


def _picture_pixels(data: bytes) -> int | None:
    """width * height from the header alone; None when PIL cannot read the header (decode_image then says
    why), -1 when PIL itself refuses the header as a decompression bomb (over twice its own pixel cap)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size[0] * img.size[1]
    except Image.DecompressionBombError:
        return -1
    except Exception:  # noqa: BLE001 - decode_image gives the one-line reason for any unreadable file
        return None


def decode_upload(data, name: str, settings: ServeSettings, min_size: int | None) -> np.ndarray:
    """An uploaded picture as uint8 (H, W, 3): 413 over the pixel limit, 400 for anything decode refuses."""
    from colorizer.data.images import decode_image

    if isinstance(data, str):
        raise HTTPError(400, f"{name}: expected an image file, got a text field")
    pixels = _picture_pixels(data)
    if pixels == -1:
        raise HTTPError(
            413, f"{name}: refused as a possible decompression bomb (over the limit of {settings.max_pixels} pixels)"
        )
    if pixels is not None and pixels > settings.max_pixels:
        raise HTTPError(413, f"{name}: {pixels} pixels is over the limit of {settings.max_pixels}")
    return decode_image(data, name, min_size=min_size, max_pixels=settings.max_pixels)


def _int_field(fields: dict, name: str) -> int | None:
    value = fields.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise HTTPError(400, f"{name}: expected a number, got a file")
    try:
        return int(value.strip())
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {value.strip()[:40]!r}", option=name) from None


def hex_palette(palette: torch.Tensor) -> list[str]:
    return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in palette.tolist()]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + kind + data + (zlib.crc32(kind + data) & 0xFFFFFFFF).to_bytes(4, "big")


def encode_png(image: np.ndarray) -> bytes:
    """uint8 (H, W, 3) -> PNG bytes (8-bit RGB): each row filtered "up" (its difference from the row above,
    PNG filter 2; the first row unfiltered), then zlib level 1 with the run-length strategy.

    Written here rather than through Pillow because it is on every request's path, on the cores the model
    runs on. Measured on a colorized 256 px picture (2-core AMD EPYC, 2026-12-07): 1.7 ms and 68 KB, against
    4.4 ms and 60 KB for Pillow at level 1 with the same strategy (Pillow tries all five filters on every row),
    2.5 ms and 192 KB for Pillow uncompressed, and 23 ms and 105 KB for Pillow's default level 6. Any PNG
    reader gives back the same pixels (tests/serve/test_api.py decodes it with Pillow)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected uint8 (H, W, 3), got {image.dtype} {image.shape}")
    height, width, _ = image.shape
    rows = np.ascontiguousarray(image).reshape(height, width * 3)
    filtered = np.empty((height, width * 3 + 1), np.uint8)
    filtered[:, 0] = 2  # "up"
    filtered[0, 0] = 0  # the first row: none
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # uint8: modulo 256, as PNG defines it
    deflate = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    data = deflate.compress(filtered.tobytes()) + deflate.flush()
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes((8, 2, 0, 0, 0))  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", data) + _png_chunk(b"IEND", b"")


# --- the app ------------------------------------------------------------------------------------------


def create_app(runner, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app serving ``runner`` (a ``colorizer.runtime.runner.Runner``).

    Its lifespan warms the model up in a thread of its own (``/healthz`` answers meanwhile, ``/readyz`` is 503
    until it is done) and, at shutdown, lets the batcher finish every queued picture.
    """
    settings = settings or ServeSettings()
    service = Service(runner, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        warm = threading.Thread(target=service.warm_up, name="colorizer-warmup", daemon=True)
        warm.start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(service.batcher.stop)

    app = FastAPI(
        title="colorizer",
        summary="Reference-based sketch colorization: a sketch and a palette (or a reference picture) -> a picture",
        lifespan=lifespan,
        docs_url=None,  # served below from the swagger-ui-bundle package: no CDN, so /docs works offline
        redoc_url=None,
    )
    app.state.service = service
    metrics = service.metrics

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["X-Colorizer-Palette", "X-Colorizer-Seed", "X-Colorizer-Model-Sha256"],
        )

    @app.middleware("http")
    async def observe(request: Request, call_next):
        start = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception:  # noqa: BLE001 - a bug: one id in the answer and in the log, the server goes on
            error_id = uuid.uuid4().hex[:12]
            log.exception("internal error %s on %s %s", error_id, request.method, request.url.path)
            response = error_response(500, f"internal error (id {error_id}; the server log has the details)")
        route = request.scope.get("route")
        label = route.path if route is not None and hasattr(route, "path") else "other"
        metrics.requests.labels(label, request.method, str(response.status_code)).inc()
        metrics.latency.labels(label).observe(time.perf_counter() - start)
        return response

    @app.exception_handler(HTTPError)
    async def http_error(request: Request, exc: HTTPError):
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(ColorizerError)
    async def user_error(request: Request, exc: ColorizerError):
        # The CLI's checks and messages (decode_image, parse_palette, check_seed, check_size): bad input.
        return error_response(400, one_line(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_exception(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error_response(400, f"{where}: {first.get('msg', 'invalid request')}" if where else "invalid request")

    def require_key(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise HTTPError(401, "missing or wrong API key (send Authorization: Bearer <key>)",
                            {"WWW-Authenticate": "Bearer"})  # fmt: skip

    def require_ready() -> None:
        if not service.ready.is_set():
            why = "the model failed to warm up" if service.warmup_error else "the model is warming up"
            raise HTTPError(503, f"not ready: {why}", {"Retry-After": str(settings.retry_after_s)})

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])
    image_part = {"type": "string", "format": "binary"}

    @v1.post(
        "/colorize",
        summary="Colorize a sketch with a reference picture's palette or with given colors",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}, "description": "the colorized picture (PNG)"}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["sketch"],
                            "properties": {
                                "sketch": {**image_part, "description": "line art (any picture PIL reads)"},
                                "reference": {**image_part, "description": "a color picture: its 9-color palette"},
                                "palette": {"type": "string", "description": "1 to 9 colors '#rrggbb,...'"},
                                "seed": {"type": "integer", "description": "noise seed, 0 to 2**31 - 1 (default 0)"},
                                "size": {"type": "integer", "description": "run at SIZExSIZE (multiple of 128)"},
                            },
                        }
                    }
                },
            }
        },
    )
    async def colorize(request: Request) -> Response:
        require_ready()
        with metrics.in_flight.track_inprogress():
            return await colorize_request(request)

    async def colorize_request(request: Request) -> Response:
        from colorizer.data.images import DEFAULT_MIN_SIZE, to_uint8
        from colorizer.inference import fit_to_model, restore_size, sketch_to_tensor
        from colorizer.limits import check_seed, check_size
        from colorizer.palette import extract_palette, parse_palette

        t0 = time.perf_counter()
        fields = await read_form(request, settings)
        stage = metrics.stage_seconds
        stage.labels("read").observe(time.perf_counter() - t0)
        unknown = sorted(set(fields) - {"sketch", "reference", "palette", "seed", "size"})
        if unknown:
            raise HTTPError(400, f"unknown field(s) {', '.join(unknown)} (sketch, reference, palette, seed, size)")
        if "sketch" not in fields:
            raise HTTPError(400, "sketch: missing (a line-art picture as a file field)")
        seed = check_seed(_int_field(fields, "seed") or 0, "seed")
        size = _int_field(fields, "size")
        if size is not None:
            size = check_size(size, "size")
        has_reference, has_palette = "reference" in fields, bool(str(fields.get("palette", "")).strip())
        if has_reference == has_palette:
            raise HTTPError(400, "give exactly one of reference (a picture) or palette ('#rrggbb,...')")
        if has_palette and not isinstance(fields["palette"], str):
            raise HTTPError(400, "palette: expected text '#rrggbb,...', got a file")
        palette = parse_palette(fields["palette"]) if has_palette else None

        def decode():  # PIL and numpy only (no torch op): a worker thread of the pool
            t = time.perf_counter()
            sketch = decode_upload(fields["sketch"], "sketch", settings, min_size=DEFAULT_MIN_SIZE)
            reference = decode_upload(fields["reference"], "reference", settings, None) if has_reference else None
            padded = fit_to_model(sketch_to_tensor(sketch).unsqueeze(0), None) if size is None else None
            stage.labels("decode").observe(time.perf_counter() - t)
            return sketch, reference, padded

        def to_model(sketch, reference, padded):  # torch work (k-means, a resize): the batcher's thread
            t = time.perf_counter()
            pal = palette if reference is None else extract_palette(reference, seed=seed)
            stage.labels("palette").observe(time.perf_counter() - t)
            return pal, padded if padded is not None else fit_to_model(sketch_to_tensor(sketch).unsqueeze(0), size)

        sketch, reference, x = await anyio.to_thread.run_sync(decode)
        height, width = sketch.shape[:2]

        def resize_back(image: torch.Tensor) -> torch.Tensor:  # with size: a torch resize, in the batcher's thread
            return restore_size(image.unsqueeze(0), height, width, size)[0]

        try:
            if reference is not None or x is None:
                pal, x = await asyncio.wrap_future(service.batcher.call(lambda: to_model(sketch, reference, x)))
            else:
                pal = palette
            future = service.batcher.submit(x, pal, seed, finish=None if size is None else resize_back)
        except QueueFull as exc:
            raise HTTPError(503, f"busy: {exc}; retry later", {"Retry-After": str(settings.retry_after_s)}) from None
        except Stopped as exc:
            raise HTTPError(503, str(exc), {"Retry-After": str(settings.retry_after_s)}) from None
        result = await asyncio.wrap_future(future)
        stage.labels("queue").observe(result.queued_s)
        stage.labels("model").observe(result.model_s)

        def encode() -> bytes:  # numpy and PIL only: the pool
            t = time.perf_counter()
            image = result.image if size is not None else restore_size(result.image, height, width, None)
            png = encode_png(to_uint8(image))
            stage.labels("encode").observe(time.perf_counter() - t)
            return png

        png = await anyio.to_thread.run_sync(encode)
        headers = {
            "X-Colorizer-Palette": ",".join(hex_palette(pal)),
            "X-Colorizer-Seed": str(seed),
            "X-Colorizer-Batch-Size": str(result.batch_size),
            "Cache-Control": "no-store",
        }
        sha = service.info().get("sha256")
        if sha:
            headers["X-Colorizer-Model-Sha256"] = sha
        return Response(png, media_type="image/png", headers=headers)

    @v1.post(
        "/palette",
        summary="The 9-color palette of a picture (k-means, as `colorizer palette`)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["image"],
                            "properties": {"image": image_part, "seed": {"type": "integer"}},
                        }
                    }
                },
            }
        },
    )
    async def palette(request: Request) -> dict:
        from colorizer.limits import check_seed
        from colorizer.palette import extract_palette

        fields = await read_form(request, settings)
        unknown = sorted(set(fields) - {"image", "seed"})
        if unknown:
            raise HTTPError(400, f"unknown field(s) {', '.join(unknown)} (image, seed)")
        if "image" not in fields:
            raise HTTPError(400, "image: missing (a picture as a file field)")
        seed = check_seed(_int_field(fields, "seed") or 0, "seed")

        image = await anyio.to_thread.run_sync(lambda: decode_upload(fields["image"], "image", settings, None))
        try:
            colors = await asyncio.wrap_future(service.batcher.call(lambda: extract_palette(image, seed=seed)))
        except (QueueFull, Stopped) as exc:
            raise HTTPError(503, f"busy: {exc}; retry later", {"Retry-After": str(settings.retry_after_s)}) from None
        return {"palette": hex_palette(colors), "seed": seed}

    @v1.get("/model", summary="What the service runs: name, sha256, format, precision, backend, device, limits")
    async def model() -> dict:
        return service.info()

    app.include_router(v1)

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict:
        return {"status": "alive"}

    @app.get("/readyz", summary="The model is loaded and warmed up")
    async def readyz() -> JSONResponse:
        require_ready()
        return JSONResponse({"status": "ready", "queue_depth": service.batcher.depth})

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _offline_docs(app)
    return app


def _offline_docs(app: FastAPI) -> None:
    """``/docs``: FastAPI's Swagger UI page with its script and style from the ``swagger-ui-bundle`` package
    instead of a CDN (a service behind a firewall, or this project's machines, reach no CDN)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-static", StaticFiles(directory=swagger_ui_path), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} API",
            swagger_js_url="/docs-static/swagger-ui-bundle.js",
            swagger_css_url="/docs-static/swagger-ui.css",
            swagger_favicon_url="/docs-static/favicon-32x32.png",
        )
