"""`roberta-torch serve PRESET [--reranker PRESET] [--host 127.0.0.1] [--port 8000] ...`

A subcommand module: `add_arguments(parser)` and `run(args) -> int`. Nothing here imports
the server libraries until `run`, so the rest of the command line works without them.
"""

from __future__ import annotations

import ipaddress
import logging
import os

from ..quantization import MODES
from ..serving.settings import API_KEY_ENVIRONMENT_VARIABLE, DEFAULT_PORT, ServerSettings

logger = logging.getLogger(__name__)

HELP = "serve embeddings (OpenAI API) and reranking (TEI API) over HTTP, with dynamic batching"


def add_arguments(parser) -> None:
    defaults = ServerSettings.__dataclass_fields__
    add = parser.add_argument
    add("model", nargs="?", metavar="PRESET",
        help="embedding model: builtin name, hf://..., kaggle://... or a directory (TextEmbedder.from_preset)")
    add("--reranker", metavar="PRESET", help="cross-encoder for POST /rerank (CrossEncoder.from_preset)")
    add("--model-name", help="the name clients send as `model` for embeddings (default: PRESET)")
    add("--reranker-name", help="the name of the reranker (default: its PRESET)")
    add("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only; "
                                             "0.0.0.0 for every interface, then set an API key)")
    add("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free port, logged)")
    add("--workers", type=int, default=1, help="server processes, each with its own model (default 1)")
    add("--device", help="torch device of the models (default: the loader's, CPU)")
    add("--dtype", help="dtype policy of the models, e.g. bfloat16 (default: the preset's)")
    add("--quantize", choices=MODES, help="int8 dense layers (CPU; dynamic activation quantization, "
                                               "per-channel weights), as from_preset(quantize='int8')")
    add("--threads", type=int, help="torch threads per process (default: torch's, divided among --workers)")
    add("--max-batch-tokens", type=int, default=defaults["max_batch_tokens"].default,
        help="tokens in one model call (default %(default)s)")
    add("--max-batch-size", type=int, default=defaults["max_batch_rows"].default, dest="max_batch_rows",
        help="texts or pairs in one model call (default %(default)s)")
    add("--max-wait-ms", type=float, default=defaults["max_wait_ms"].default,
        help="how long a request may wait for others to batch with (default %(default)s ms)")
    add("--max-queue-tokens", type=int, default=defaults["max_queue_tokens"].default,
        help="tokens waiting at most; more gets 429 with Retry-After (default %(default)s)")
    add("--max-texts-per-request", type=int, default=defaults["max_texts_per_request"].default,
        help="texts (or rerank documents) in one request (default %(default)s)")
    add("--max-tokens-per-request", type=int, default=defaults["max_tokens_per_request"].default,
        help="tokens in one request, after truncation (default %(default)s)")
    add("--max-request-bytes", type=int, default=defaults["max_request_bytes"].default,
        help="request body size (default %(default)s)")
    add("--request-timeout", type=float, default=defaults["request_timeout_s"].default, dest="request_timeout_s",
        help="seconds a request may take, queue included; then 503 (default %(default)s)")
    add("--graceful-shutdown-timeout", type=float, default=defaults["graceful_shutdown_s"].default,
        dest="graceful_shutdown_s", help="seconds to finish in-flight requests on SIGTERM / Ctrl-C (default %(default)s)")
    add("--api-key", help=f"require `Authorization: Bearer KEY` (or set {API_KEY_ENVIRONMENT_VARIABLE})")
    add("--allow-pickle", action="store_true", help="allow transformers' pytorch_model.bin")
    add("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    add("--no-access-log", action="store_true", help="do not log every request")


def settings_from_arguments(args) -> ServerSettings:
    names = [name for name in ServerSettings.__dataclass_fields__ if name != "api_key"]
    values = {name: getattr(args, name) for name in names if hasattr(args, name)}
    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENVIRONMENT_VARIABLE) or None
    settings = ServerSettings(**values, api_key=api_key)
    if settings.threads is None and settings.workers > 1:
        settings.threads = max(1, (os.cpu_count() or 1) // settings.workers)
    return settings


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args) -> int:
    settings = settings_from_arguments(args)
    try:
        import uvicorn
    except ImportError as error:
        raise ImportError("`roberta-torch serve` needs uvicorn and starlette: pip install 'roberta_torch[serve]'") from error
    from ..serving.app import create_app

    if not _is_loopback(settings.host) and settings.api_key is None:
        logger.warning("Listening on %s without an API key: anyone who reaches this port can use the models "
                       "(set --api-key or %s).", settings.host, API_KEY_ENVIRONMENT_VARIABLE)
    options = dict(host=settings.host, port=settings.port, log_level=settings.log_level,
                   access_log=not args.no_access_log, timeout_graceful_shutdown=settings.graceful_shutdown_s)
    if settings.workers == 1:
        server = uvicorn.Server(uvicorn.Config(create_app(settings), **options))
        server.run()
        return 0 if server.started else 1  # a failed start (port in use, model error) was logged
    os.environ.update(settings.to_environment())
    uvicorn.run("roberta_torch.serving.app:app_from_environment", factory=True, workers=settings.workers, **options)
    return 0
