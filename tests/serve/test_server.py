"""A real `colorizer serve` process on a free loopback port: start, readiness, many concurrent clients,
batching seen in /metrics, a picture the same alone or batched, a slow upload, SIGTERM drains."""

from __future__ import annotations

import concurrent.futures
import signal
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from tests.serve.conftest import decode_png, png_bytes

pytestmark = pytest.mark.timeout(180)


def colorize(client, i):
    files = {"sketch": ("s.png", png_bytes(128 + 16 * (i % 3), 128, seed=i), "image/png")}
    data = {"palette": f"#{(40 * i) % 256:02x}8040,#2040{(70 * i) % 256:02x}", "seed": str(1000 + i)}
    response = client.post("/v1/colorize", files=files, data=data)
    assert response.status_code == 200, response.text
    return response


def test_batched_pictures_equal_the_pictures_served_alone(serve):
    server = serve("--max-batch", "4", "--max-wait-ms", "200")
    assert server.client.get("/healthz").status_code == 200
    server.wait_ready()
    assert any(line.startswith("ready: http://127.0.0.1:") for line in server.lines)
    alone = [decode_png(colorize(server.client, i).content) for i in range(8)]
    assert server.metric("colorizer_batch_size_count") == 8
    assert server.metric("colorizer_batch_size_sum") == 8  # one by one: eight batches of one

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda i: colorize(server.client, i), range(8)))
    together = [decode_png(r.content) for r in responses]
    for i in range(8):
        assert np.array_equal(alone[i], together[i]), f"picture {i} differs when batched"
    batches = server.metric("colorizer_batch_size_count") - 8
    assert batches < 8, "eight concurrent requests with a 200 ms window ran as eight batches"
    assert max(int(r.headers["x-colorizer-batch-size"]) for r in responses) > 1


def test_many_concurrent_clients_and_a_slow_upload(serve):
    server = serve("--max-batch", "4", "--max-wait-ms", "5", "--upload-timeout-s", "1", "--max-queue", "256")
    server.wait_ready()
    # A client that sends half a body and stalls: 408 after the upload timeout, and nobody waits for it.
    host, port = server.url.removeprefix("http://").split(":")
    slow = socket.create_connection((host, int(port)), timeout=30)
    slow.sendall(
        b"POST /v1/colorize HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b'Content-Length: 100000\r\n\r\n--b\r\nContent-Disposition: form-data; name="sketch"; filename="s"\r\n\r\n'
    )
    # A client that goes away mid-upload: no answer to send, and not a bug (no 500 in the log).
    gone = socket.create_connection((host, int(port)), timeout=30)
    gone.sendall(
        b"POST /v1/colorize HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: 100000\r\n\r\n--b\r\n"
    )
    gone.close()
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda i: colorize(server.client, i).status_code, range(48)))
    assert statuses == [200] * 48
    assert server.client.get("/healthz").status_code == 200
    answer = slow.recv(4096).decode("latin-1")
    slow.close()
    assert answer.startswith("HTTP/1.1 408"), answer
    assert "did not finish within 1 s" in answer
    assert time.monotonic() - start < 170
    text = server.client.get("/metrics").text
    assert 'colorizer_http_requests_total{method="POST",route="/v1/colorize",status="200"} 48.0' in text
    assert 'colorizer_http_requests_total{method="POST",route="/v1/colorize",status="408"} 1.0' in text
    assert not any("internal error" in line for line in server.lines), "".join(server.lines)


def test_sigterm_finishes_queued_and_in_flight_requests(serve):
    server = serve("--max-batch", "2", "--max-wait-ms", "0")
    server.wait_ready()
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(colorize, server.client, i) for i in range(6)]
        deadline = time.monotonic() + 60
        while server.metric("colorizer_colorize_in_flight") < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.proc.send_signal(signal.SIGTERM)
        statuses = [f.result(120).status_code for f in futures]
    assert statuses == [200] * 6
    assert server.proc.wait(60) == 0, "".join(server.lines)
    with pytest.raises(httpx.TransportError):
        server.client.get("/healthz")


def test_a_bad_model_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "nothing.safetensors"
    bad.write_bytes(b"not weights")
    result = subprocess.run(
        [sys.executable, "-m", "colorizer.cli", "serve", str(bad), "--port", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
