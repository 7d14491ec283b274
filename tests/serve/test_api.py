"""The HTTP interface in-process (FastAPI's TestClient): every route, every error status, auth and limits."""

from __future__ import annotations

import hashlib
import io
import logging
import re
import threading

import numpy as np
import pytest
import torch

from tests.serve.conftest import decode_png, png_bytes, wait_ready

PALETTE = "#ff0000,#00ff00,#0000ff"


def expected_picture(runner, sketch_png: bytes, palette: torch.Tensor, seed: int, size=None) -> np.ndarray:
    """What colorize returns for these inputs, computed without the service (decode, pad, run, crop)."""
    from colorizer.data.images import decode_image, to_uint8
    from colorizer.inference import fit_to_model, restore_size, sketch_to_tensor

    sketch = decode_image(sketch_png, "sketch")
    x = fit_to_model(sketch_to_tensor(sketch).unsqueeze(0), size)
    out = runner.colorize(x, palette[None], [seed])
    return to_uint8(restore_size(out, sketch.shape[0], sketch.shape[1], size))[0]


def flat_png(height: int, width: int) -> bytes:
    """A one-gray picture: a few hundred bytes at any size."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (width, height), 200).save(buf, format="PNG")
    return buf.getvalue()


def post_colorize(client, sketch=None, headers=None, **fields):
    files = {"sketch": ("sketch.png", png_bytes() if sketch is None else sketch, "image/png")}
    if "reference" in fields:
        files["reference"] = ("ref.png", fields.pop("reference"), "image/png")
    data = {k: str(v) for k, v in fields.items()}
    return client.post("/v1/colorize", files=files, data=data, headers=headers or {})


def assert_error(response, status: int, *needles: str):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and "\n" not in body["error"], body
    for needle in needles:
        assert needle in body["error"], body["error"]
    return body["error"]


def test_health_ready_model_metrics(make_client, runner, tiny_checkpoint):
    client = make_client()
    assert client.get("/healthz").json() == {"status": "alive"}
    assert client.get("/readyz").status_code == 200
    info = client.get("/v1/model").json()
    assert info["sha256"] == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert (info["format"], info["precision"], info["backend"], info["device"]) == ("torch", "fp32", "eager", "cpu")
    assert info["limits"]["max_side"] == 16384 and info["limits"]["max_batch"] == 1
    assert info["limits"]["max_upload_mb"] == 20.0
    text = client.get("/metrics").text
    for series in ("colorizer_http_requests_total", "colorizer_http_request_duration_seconds_bucket",
                   "colorizer_batch_size_bucket", "colorizer_queue_depth", "colorizer_ready 1.0"):  # fmt: skip
        assert series in text, series
    assert 'colorizer_http_requests_total{method="GET",route="/healthz",status="200"} 1.0' in text


def test_colorize_with_palette_matches_the_model(make_client, runner):
    from colorizer.palette import parse_palette

    client = make_client()
    sketch = png_bytes(150, 200, seed=1)
    response = post_colorize(client, sketch, palette=PALETTE, seed=7)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-colorizer-seed"] == "7"
    assert response.headers["x-colorizer-palette"].split(",")[:4] == ["#ff0000", "#00ff00", "#0000ff", "#ff0000"]
    assert response.headers["x-colorizer-model-sha256"] == runner.sha256
    picture = decode_png(response.content)
    assert picture.shape == (150, 200, 3)
    expected = expected_picture(runner, sketch, parse_palette(PALETTE), 7)
    assert np.abs(picture.astype(int) - expected.astype(int)).max() <= 1
    other_seed = decode_png(post_colorize(client, sketch, palette=PALETTE, seed=8).content)
    assert not np.array_equal(other_seed, picture)


@pytest.mark.parametrize("height, width", [(1, 1), (1, 7), (5, 1), (3, 257), (256, 256), (150, 200)])
def test_encode_png_gives_the_pixels_back_to_pillow(height, width):
    """The service's own PNG writer (colorizer.serve.app.encode_png): Pillow reads it as 8-bit RGB with the
    exact pixels (including rows that wrap modulo 256 under the "up" filter), and it is no larger than
    Pillow's uncompressed PNG."""
    from PIL import Image

    from colorizer.serve.app import encode_png

    rng = np.random.default_rng(height * 1000 + width)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image[: height // 2] = 255 - image[: height // 2]  # large jumps between rows
    data = encode_png(image)
    with Image.open(io.BytesIO(data)) as img:
        assert (img.format, img.mode, img.size) == ("PNG", "RGB", (width, height))
        img.load()  # checks the chunks' CRCs and the zlib stream
        assert np.array_equal(np.asarray(img), image)
    smooth = np.broadcast_to(np.linspace(0, 255, width, dtype=np.uint8)[None, :, None], (height, width, 3))
    plain = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(smooth)).save(plain, format="PNG", compress_level=0)
    assert len(encode_png(np.ascontiguousarray(smooth))) <= len(plain.getvalue())
    with pytest.raises(ValueError, match="uint8"):
        encode_png(image.astype(np.float32))


def test_colorize_with_reference_and_size(make_client, runner):
    from colorizer.data.images import decode_image
    from colorizer.palette import extract_palette

    client = make_client()
    sketch, reference = png_bytes(130, 140, seed=2), png_bytes(60, 90, seed=3)
    response = post_colorize(client, sketch, reference=reference, seed=3, size=256)
    assert response.status_code == 200, response.text
    palette = extract_palette(decode_image(reference, "reference"), seed=3)
    used = response.headers["x-colorizer-palette"].split(",")
    assert used == [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in palette.tolist()]
    picture = decode_png(response.content)
    assert picture.shape == (130, 140, 3)
    expected = expected_picture(runner, sketch, palette, 3, size=256)
    assert np.abs(picture.astype(int) - expected.astype(int)).max() <= 1


def test_palette_route(make_client):
    from colorizer.data.images import decode_image
    from colorizer.palette import extract_palette

    client = make_client()
    image = png_bytes(40, 50, seed=4)
    response = client.post("/v1/palette", files={"image": ("a.png", image, "image/png")}, data={"seed": "2"})
    assert response.status_code == 200, response.text
    expected = extract_palette(decode_image(image, "image"), seed=2)
    assert response.json() == {"palette": [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in expected.tolist()], "seed": 2}
    assert_error(client.post("/v1/palette", files={"other": ("a.png", image)}), 400, "unknown field")
    assert_error(client.post("/v1/palette", files={"image": ("a.png", b"not a picture")}), 400, "image:")


@pytest.mark.parametrize(
    "fields, needles",
    [
        ({}, ("exactly one of reference",)),
        ({"palette": PALETTE, "reference": png_bytes(20, 20)}, ("exactly one of reference",)),
        ({"palette": ",".join(["#102030"] * 10)}, ("palette: 10 colors given, at most 9 allowed",)),
        ({"palette": "#12345g"}, ("palette: bad color",)),
        ({"palette": PALETTE, "seed": 2**31}, ("seed must be in [0, 2147483647]",)),
        ({"palette": PALETTE, "seed": -1}, ("seed must be in",)),
        ({"palette": PALETTE, "seed": "1.5"}, ("seed must be an integer",)),
        ({"palette": PALETTE, "size": 100}, ("size must be a multiple of 128",)),
        ({"palette": PALETTE, "size": 128 * 200}, ("size must be a multiple of 128 from 128 to 16384",)),
        ({"palette": PALETTE, "colour": "red"}, ("unknown field(s) colour",)),
    ],
)
def test_bad_fields_are_400_with_the_cli_message(make_client, fields, needles):
    client = make_client()
    assert_error(post_colorize(client, **fields), 400, *needles)


def test_bad_pictures_are_400(make_client):
    client = make_client()
    corrupt = png_bytes(64, 64)[:60] + b"\x00" * 40
    assert_error(post_colorize(client, corrupt, palette=PALETTE), 400, "sketch:")
    assert_error(post_colorize(client, b"hello, not a picture", palette=PALETTE), 400, "sketch: not an image file")
    assert_error(post_colorize(client, png_bytes(1, 1), palette=PALETTE), 400, "sketch: 1x1 px is too small")
    assert_error(post_colorize(client, b"", palette=PALETTE), 400, "sketch: empty file")
    # A reference of one pixel is fine (as in colorize --reference): one color, repeated.
    ok = post_colorize(client, png_bytes(128, 128), reference=png_bytes(1, 1), seed=0)
    assert ok.status_code == 200, ok.text
    response = client.post("/v1/colorize", files={"reference": ("r.png", png_bytes(20, 20))}, data={})
    assert_error(response, 400, "sketch: missing")
    response = client.post("/v1/colorize", data={"sketch": "text", "palette": PALETTE})
    assert_error(response, 400, "multipart/form-data")
    response = client.post("/v1/colorize", files={"sketch": (None, "just text")}, data={"palette": PALETTE})
    assert_error(response, 400, "sketch: expected an image file")


def test_wrong_content_type_is_400(make_client):
    client = make_client()
    assert_error(client.post("/v1/colorize", json={"sketch": "x"}), 400, "multipart/form-data", "application/json")
    response = client.post("/v1/colorize", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data"})
    assert_error(response, 400, "multipart")


def test_limits_are_413(make_client):
    client = make_client(max_upload_mb=0.05, max_pixels=300 * 300)
    assert_error(post_colorize(client, png_bytes(200, 200), palette=PALETTE), 413, "upload over the limit of 0.05 MB")
    small = flat_png(128, 128)
    too_many = flat_png(400, 400)
    assert len(too_many) < 0.05 * (1 << 20)
    assert_error(post_colorize(client, too_many, palette=PALETTE), 413, "sketch: 160000 pixels is over the limit")
    assert post_colorize(client, small, palette=PALETTE).status_code == 200


def test_zip_bomb_png_is_413_before_decoding(make_client):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (20000, 20000)).save(buf, format="PNG", compress_level=9)  # 400 MP in about 400 KB
    assert len(buf.getvalue()) < 1 << 20
    client = make_client()
    assert_error(
        post_colorize(client, buf.getvalue(), palette=PALETTE), 413, "sketch: refused as a possible decompression bomb"
    )
    buf = io.BytesIO()
    Image.new("L", (5000, 5000)).save(buf, format="PNG", compress_level=9)  # under PIL's cap, over the service's
    assert_error(
        post_colorize(client, buf.getvalue(), palette=PALETTE), 413, "sketch: 25000000 pixels is over the limit"
    )
    assert client.get("/healthz").status_code == 200


def test_fifty_megabytes_of_garbage_is_413(make_client):
    client = make_client()
    garbage = np.random.default_rng(0).integers(0, 256, 50 << 20, dtype=np.uint8).tobytes()
    assert_error(post_colorize(client, garbage, palette=PALETTE), 413, "upload over the limit of 20 MB")
    assert post_colorize(client, palette=PALETTE).status_code == 200


class _Blocking:
    """A runner whose colorize waits for ``release`` (after the warm-up), to hold the batcher busy."""

    def __init__(self, runner):
        self.inner, self.release, self.started = runner, threading.Event(), threading.Event()
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def colorize(self, sketches, palettes, seeds):
        self.calls += 1
        if self.calls > 1:  # the warm-up passes
            self.started.set()
            assert self.release.wait(30)
        return self.inner.colorize(sketches, palettes, seeds)


def test_full_queue_is_503_with_retry_after(make_client, runner):
    blocking = _Blocking(runner)
    client = make_client(model=blocking, max_queue=1)
    results = []
    first = threading.Thread(target=lambda: results.append(post_colorize(client, palette=PALETTE)))
    first.start()
    assert blocking.started.wait(30)  # the first picture is in the model, the queue is empty
    second = threading.Thread(target=lambda: results.append(post_colorize(client, palette=PALETTE)))
    second.start()
    service = client.app.state.service
    for _ in range(3000):
        if service.batcher.depth == 1:
            break
        threading.Event().wait(0.01)
    assert service.batcher.depth == 1
    response = post_colorize(client, palette=PALETTE)
    assert_error(response, 503, "queue is full")
    assert response.headers["retry-after"] == "1"
    blocking.release.set()
    first.join(30)
    second.join(30)
    assert [r.status_code for r in results] == [200, 200]


class _Broken:
    def __init__(self, runner):
        self.inner, self.calls = runner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def colorize(self, sketches, palettes, seeds):
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("a bug in the engine")
        return self.inner.colorize(sketches, palettes, seeds)


def test_a_bug_is_500_with_an_id_in_the_log_and_the_server_goes_on(make_client, runner, caplog):
    client = make_client(model=_Broken(runner))
    with caplog.at_level(logging.ERROR, logger="colorizer.serve"):
        message = assert_error(post_colorize(client, palette=PALETTE), 500, "internal error")
    error_id = re.search(r"id ([0-9a-f]{12})", message).group(1)
    assert any(error_id in r.getMessage() and r.exc_info for r in caplog.records)
    assert "a bug in the engine" not in message  # the details stay in the log
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/model").status_code == 200


def test_not_ready_until_warmed_up(make_client, runner):
    gate = threading.Event()

    class Slow:
        def __getattr__(self, name):
            return getattr(runner, name)

        def colorize(self, sketches, palettes, seeds):
            assert gate.wait(30)
            return runner.colorize(sketches, palettes, seeds)

    client = make_client(model=Slow(), ready=False)
    assert client.get("/healthz").status_code == 200  # alive while warming up
    response = client.get("/readyz")
    assert_error(response, 503, "warming up")
    assert response.headers["retry-after"] == "1"
    assert_error(post_colorize(client, palette=PALETTE), 503, "warming up")
    gate.set()
    wait_ready(client)
    assert post_colorize(client, palette=PALETTE).status_code == 200


def test_api_key(make_client, monkeypatch):
    client = make_client(api_key="s3cret")
    for response in (client.get("/v1/model"), post_colorize(client, palette=PALETTE)):
        assert_error(response, 401, "API key")
        assert response.headers["www-authenticate"] == "Bearer"
    assert_error(client.get("/v1/model", headers={"Authorization": "Bearer wrong"}), 401)
    assert_error(client.get("/v1/model", headers={"Authorization": "Basic s3cret"}), 401)
    good = {"Authorization": "Bearer s3cret"}
    assert client.get("/v1/model", headers=good).status_code == 200
    assert post_colorize(client, palette=PALETTE, headers=good).status_code == 200
    # Probes, metrics and the page stay open (the page asks for the key).
    for path in ("/healthz", "/readyz", "/metrics", "/", "/static/app.js"):
        assert client.get(path).status_code == 200, path


def test_cors_off_unless_asked(make_client):
    origin = {"Origin": "https://artist.example"}
    closed = make_client()
    assert "access-control-allow-origin" not in closed.get("/v1/model", headers=origin).headers
    opened = make_client(cors_origins=("https://artist.example",))
    response = opened.get("/v1/model", headers=origin)
    assert response.headers["access-control-allow-origin"] == "https://artist.example"
    assert "X-Colorizer-Palette" in response.headers["access-control-expose-headers"]
    other = opened.get("/v1/model", headers={"Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in other.headers


def test_page_docs_and_unknown_routes(make_client):
    client = make_client()
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'src="/static/app.js"' in page.text
    assert client.get("/static/style.css").status_code == 200
    docs = client.get("/docs")
    assert docs.status_code == 200 and "/docs-static/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()  # works without network (the script and style are ours to serve)
    assert client.get("/docs-static/swagger-ui-bundle.js").status_code == 200
    assert client.get("/docs-static/swagger-ui.css").status_code == 200
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/v1/colorize"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"sketch", "reference", "palette", "seed", "size"} <= set(body["properties"])
    assert_error(client.get("/nowhere"), 404)
    assert_error(client.get("/static/../app.py"), 404)
    assert_error(client.get("/v1/colorize"), 405)


def test_no_route_touches_a_path_the_client_names(make_client, tmp_path):
    client = make_client()
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes(128, 128))
    response = client.post("/v1/colorize", data={"sketch": str(secret), "palette": PALETTE},
                           files={"x": ("x", b"")})  # fmt: skip
    assert response.status_code == 400
    response = client.post("/v1/palette", data={"image": str(secret)}, files={"x": ("x", b"")})
    assert response.status_code == 400


def test_every_torch_operation_runs_in_the_batchers_thread(make_client, runner, monkeypatch):
    """The service's one-OpenMP-team rule (colorizer.serve.batcher): a reference's palette, a resize to
    ``size`` and back, and the model run in the batcher's thread, for /v1/colorize and /v1/palette. (What runs
    in the pool, the conversions of colorizer.inference and to_uint8, dispatches no torch op:
    tests/test_inference.py.)"""
    import colorizer.inference
    import colorizer.palette

    seen: dict[str, set[str]] = {}

    def spy(module, name, when=lambda *a: True):
        original = getattr(module, name)

        def wrapped(*args, **kwargs):
            if when(*args):
                seen.setdefault(name, set()).add(threading.current_thread().name)
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapped)

    spy(colorizer.inference, "fit_to_model", when=lambda x, size: size is not None)
    spy(colorizer.inference, "restore_size", when=lambda image, h, w, size: size is not None)
    spy(colorizer.palette, "extract_palette")

    class Model:
        def __getattr__(self, name):
            return getattr(runner, name)

        def colorize(self, *args):
            seen.setdefault("colorize", set()).add(threading.current_thread().name)
            return runner.colorize(*args)

    client = make_client(model=Model())
    assert post_colorize(client, palette=PALETTE).status_code == 200
    assert post_colorize(client, reference=png_bytes(40, 40, seed=1), size=128).status_code == 200
    image = {"image": ("a.png", png_bytes(30, 30), "image/png")}
    assert client.post("/v1/palette", files=image).status_code == 200
    names = ("fit_to_model", "restore_size", "extract_palette", "colorize")
    assert {name: seen.get(name) for name in names} == {name: {"colorizer-batcher"} for name in names}
