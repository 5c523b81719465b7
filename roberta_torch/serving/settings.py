"""Everything `roberta-torch serve` is configured with, checked once, in one dataclass.

It travels to `--workers` processes as JSON in an environment variable (uvicorn starts each
worker from an import string, so a worker rebuilds the app from these settings).
"""

from __future__ import annotations

import dataclasses
import json
import os

from ..quantization import check_preset_quantize
from .batcher import BatchingLimits

SETTINGS_ENVIRONMENT_VARIABLE = "ROBERTA_TORCH_SERVE_SETTINGS"
API_KEY_ENVIRONMENT_VARIABLE = "ROBERTA_TORCH_API_KEY"
DEFAULT_PORT = 8000


@dataclasses.dataclass
class ServerSettings:
    """Settings of one server process (see `roberta-torch serve --help` for each)."""

    model: str | None = None  # embedding preset
    reranker: str | None = None  # cross-encoder preset
    model_name: str | None = None  # the name clients send as "model" (default: the preset)
    reranker_name: str | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    workers: int = 1
    device: str | None = None
    dtype: str | None = None
    quantize: str | None = None  # "int8": dynamic int8 dense layers (CPU), as from_preset(quantize=)
    threads: int | None = None  # torch intra-op threads per process
    max_batch_tokens: int = 8192
    max_batch_rows: int = 256
    max_wait_ms: float = 2.0
    max_queue_tokens: int = 1 << 19
    max_texts_per_request: int = 2048
    max_tokens_per_request: int = 1 << 17
    max_request_bytes: int = 16 << 20
    request_timeout_s: float = 60.0
    graceful_shutdown_s: float = 30.0
    api_key: str | None = dataclasses.field(default=None, repr=False)
    allow_pickle: bool = False
    log_level: str = "info"

    def __post_init__(self):
        if self.model is None and self.reranker is None:
            raise ValueError("Give an embedding model (PRESET) or a reranker (--reranker PRESET), or both.")
        positive = ("workers", "max_batch_tokens", "max_batch_rows", "max_queue_tokens",
                    "max_texts_per_request", "max_tokens_per_request", "max_request_bytes")
        for name in positive + ("threads",):
            value = getattr(self, name)
            if value is None and name == "threads":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name.replace('_', '-')}` must be an int >= 1; got {value!r}.")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"`port` must be an int in 0..65535 (0: any free port, logged); got {self.port!r}.")
        for name in ("request_timeout_s", "graceful_shutdown_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"`{name}` must be a positive number of seconds; got {value!r}.")
        if self.max_tokens_per_request > self.max_queue_tokens:
            raise ValueError(
                f"`max-tokens-per-request` ({self.max_tokens_per_request:,}) must not exceed `max-queue-tokens` "
                f"({self.max_queue_tokens:,}): such a request could never be queued."
            )
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key):
            raise ValueError("`api-key` must be a non-empty string (or left out).")
        self.limits  # checks max_wait_ms and the batch sizes
        check_preset_quantize(self.quantize, self.device)

    @property
    def limits(self) -> BatchingLimits:
        return BatchingLimits(
            max_batch_tokens=self.max_batch_tokens,
            max_batch_rows=self.max_batch_rows,
            max_wait_s=self.max_wait_ms / 1000.0,
            max_queue_tokens=self.max_queue_tokens,
        )

    @property
    def served_model_name(self) -> str | None:
        return self.model_name or self.model

    @property
    def served_reranker_name(self) -> str | None:
        return self.reranker_name or self.reranker

    def backbone_kwargs(self) -> dict:
        kwargs = {}
        if self.device is not None:
            kwargs["device"] = self.device
        if self.dtype is not None:
            kwargs["dtype"] = self.dtype
        if self.quantize is not None:
            kwargs["quantize"] = self.quantize
        return kwargs

    # -- passing to worker processes ----------------------------------------------------------

    def to_environment(self) -> dict[str, str]:
        """The environment a `--workers` process reads its settings from (the API key travels
        in its own variable)."""
        data = dataclasses.asdict(self)
        key = data.pop("api_key")
        environment = {SETTINGS_ENVIRONMENT_VARIABLE: json.dumps(data)}
        if key is not None:
            environment[API_KEY_ENVIRONMENT_VARIABLE] = key
        return environment

    @classmethod
    def from_environment(cls) -> "ServerSettings":
        raw = os.environ.get(SETTINGS_ENVIRONMENT_VARIABLE)
        if raw is None:
            raise RuntimeError(f"{SETTINGS_ENVIRONMENT_VARIABLE} is not set; start the server with `roberta-torch serve`.")
        return cls(**json.loads(raw), api_key=os.environ.get(API_KEY_ENVIRONMENT_VARIABLE) or None)
