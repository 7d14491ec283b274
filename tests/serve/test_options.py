"""`colorizer serve` options: every one documented, the policy's defaults per device and format, bad values
as one-line errors naming the flag."""

from __future__ import annotations

import types

import pytest
import torch

from colorizer.errors import ConfigError


def parse(*argv):
    from colorizer.cli import build_parser

    return build_parser().parse_args(["serve", *argv])


def fake_runner(device="cpu", format="torch"):
    return types.SimpleNamespace(device=torch.device(device), format=format)


def test_every_option_is_documented():
    from colorizer.cli import build_parser

    parser = build_parser()
    serve = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "serve")[1]
    for action in serve._actions:
        assert action.help and action.help.strip(), action.dest


@pytest.mark.parametrize(
    "device, format, argv, batch, fixed, wait",
    [
        ("cpu", "torch", [], 1, False, 0.0),  # torch on a CPU: no batching, nothing to pad, no wait
        ("cpu", "openvino", [], 1, False, 0.0),
        ("cpu", "openvino", ["--max-batch", "8"], 8, False, 0.0),  # batch-invariant: batches unpadded
        ("cpu", "openvino", ["--max-batch", "8", "--batch-shape", "fixed"], 8, True, 0.0),
        ("cpu", "torch", ["--max-batch", "4"], 4, True, 0.0),  # a torch CPU batch is padded to one shape
        ("cpu", "torch", ["--max-batch", "4", "--batch-shape", "any", "--max-wait-ms", "2"], 4, False, 2.0),
        ("cuda", "torch", [], 8, False, 5.0),  # a GPU batches by default, without padding
        ("cuda", "tensorrt", ["--batch-shape", "fixed"], 8, True, 5.0),
    ],
)
def test_policy_fills_what_was_not_given(device, format, argv, batch, fixed, wait):
    from colorizer.serve.cli import settings_from_args

    settings = settings_from_args(parse(*argv), fake_runner(device, format))
    assert (settings.max_batch, settings.fixed_batch, settings.max_wait_ms) == (batch, fixed, wait)


def test_streams_default_per_device_format_and_threads_and_only_for_torch(monkeypatch):
    """--streams: one per thread for torch on a CPU of up to 2 threads (measured there), 1 elsewhere; an
    engine refuses more than 1 (OpenVINO has its own: --openvino-requests)."""
    from colorizer.serve.cli import settings_from_args
    from colorizer.serve.policy import default_streams

    assert [default_streams("cpu", "torch", t) for t in (1, 2, 4, 16)] == [1, 2, 1, 1]
    assert default_streams("cuda", "torch", 2) == default_streams("cpu", "openvino", 2) == 1
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert settings_from_args(parse(), fake_runner()).streams == 2
    assert settings_from_args(parse(), fake_runner("cpu", "openvino")).streams == 1
    assert settings_from_args(parse("--streams", "1"), fake_runner()).streams == 1
    assert settings_from_args(parse("--streams", "3"), fake_runner("cuda")).streams == 3
    with pytest.raises(ConfigError, match="streams is for a torch model; this one is openvino .*--openvino-requests"):
        settings_from_args(parse("--streams", "2"), fake_runner("cpu", "openvino"))
    with pytest.raises(ConfigError) as info:
        settings_from_args(parse("--streams", "0"), fake_runner())
    assert info.value.for_command_line().startswith("--streams must be at least 1")


def test_openvino_requests_option_and_a_per_picture_runner():
    """--openvino-requests N|auto (OpenVINO's async infer requests, off by default: measured slower here); a
    runner that runs each picture as its own request serves as many at once as it has requests, without
    padding (a picture's bits never depend on its companions)."""
    from types import SimpleNamespace

    from colorizer.serve.cli import settings_from_args

    assert parse().openvino_requests is None
    assert parse("--openvino-requests", "auto").openvino_requests == "auto"
    assert parse("--openvino-requests", "3").openvino_requests == 3
    for bad in ("0", "-2", "x"):
        with pytest.raises(ConfigError, match="openvino-requests"):
            parse("--openvino-requests", bad)
    runner = fake_runner("cpu", "openvino")
    runner.engine = SimpleNamespace(queue=object(), requests=3)
    settings = settings_from_args(parse(), runner)
    assert (settings.max_batch, settings.fixed_batch) == (3, False)
    assert settings_from_args(parse("--max-batch", "1"), runner).max_batch == 1


def test_api_key_from_the_environment_and_defaults(monkeypatch):
    from colorizer.serve.cli import API_KEY_ENV, settings_from_args

    monkeypatch.delenv(API_KEY_ENV, raising=False)
    args = parse()
    assert (args.host, args.port, args.model) == ("127.0.0.1", 8000, None)
    assert settings_from_args(args, fake_runner()).api_key is None
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert settings_from_args(parse(), fake_runner()).api_key == "from-env"
    assert settings_from_args(parse("--api-key", "flag"), fake_runner()).api_key == "flag"
    assert settings_from_args(
        parse("--cors-origin", "https://a", "--cors-origin", "https://b"), fake_runner()
    ).cors_origins == (
        "https://a",
        "https://b",
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--max-batch", "0"], "--max-batch must be at least 1"),
        (["--max-queue", "0"], "--max-queue must be at least 1"),
        (["--max-wait-ms", "-1"], "--max-wait-ms must be a number >= 0"),
        (["--max-upload-mb", "nan"], "--max-upload-mb must be a number >= 0"),
        (["--warmup-size", "100"], "--warmup-size must be a multiple of 128"),
    ],
)
def test_bad_values_are_one_line_naming_the_flag(argv, message):
    from colorizer.serve.cli import settings_from_args

    with pytest.raises(ConfigError) as info:
        settings_from_args(parse(*argv), fake_runner())
    assert info.value.for_command_line().startswith(message)


def test_a_port_in_use_is_one_line():
    from colorizer.serve.cli import _bind

    taken = _bind("127.0.0.1", 0)
    try:
        with pytest.raises(ConfigError, match="cannot listen on 127.0.0.1"):
            _bind("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()
    with pytest.raises(ConfigError, match="port must be from 0 to 65535"):
        _bind("127.0.0.1", 70000)


def test_connections_of_the_bound_socket_get_tcp_nodelay():
    """asyncio turns Nagle's algorithm off only for sockets whose proto is IPPROTO_TCP; without it each answer
    on a kept-alive connection waited for the client's delayed ACK (40 ms)."""
    import asyncio
    import socket

    from colorizer.serve.cli import _bind

    sock = _bind("127.0.0.1", 0)
    seen = []

    async def main():
        def on_connect(reader, writer):
            seen.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=sock)
        async with server:
            reader, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            await reader.read()
            writer.close()

    asyncio.run(asyncio.wait_for(main(), 30))
    assert seen and seen[0] != 0
