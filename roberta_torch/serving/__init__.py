"""An HTTP server for embeddings and reranking: `roberta-torch serve PRESET [--reranker PRESET]`.

OpenAI-compatible `POST /v1/embeddings`, text-embeddings-inference-style `POST /rerank`,
`GET /health`, `GET /metrics`; dynamic batching on one model worker thread per process.
Needs the `serve` extra (starlette, uvicorn, prometheus_client), imported only when used.
"""

from .batcher import BatchingLimits, ModelWorker, Overloaded, RequestTimedOut, ShuttingDown
from .settings import ServerSettings

__all__ = ["ServerSettings", "BatchingLimits", "ModelWorker", "Overloaded", "RequestTimedOut", "ShuttingDown",
           "create_app"]


def create_app(settings, embedding=None, rerank=None):
    """The ASGI app (see serving/app.py)."""
    from .app import create_app as _create_app

    return _create_app(settings, embedding, rerank)
