"""The service's settings, importable without the serve extra (``colorizer --help`` reads the defaults)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    """The service's knobs (``colorizer serve --help`` documents each)."""

    max_batch: int = 1
    max_wait_ms: float = 5.0
    max_queue: int = 64
    max_upload_mb: float = 20.0
    max_pixels: int = 2048 * 2048
    upload_timeout_s: float = 30.0
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    warmup_size: int = 256
    fixed_batch: bool = False  # pad every batch to max_batch pictures (see colorizer.serve.policy)
    streams: int = 1  # pictures run side by side when several wait (colorizer.serve.batcher, .policy)
    threads: int | None = None  # a picture alone runs on these (None: torch.get_num_threads())
    retry_after_s: int = 1
