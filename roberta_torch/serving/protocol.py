"""The wire formats: OpenAI's embeddings API and text-embeddings-inference's /rerank.

Pure functions from a parsed JSON body to a checked request, and from results to the
response body. Every problem with the input is an `ApiError` with a 4xx status that names
the field and says what to send instead (never a 500 for user input).

    POST /v1/embeddings  {"input": str | [str], "model"?: str, "encoding_format"?: "float" | "base64",
                          "dimensions"?: int, "user"?: str, "prompt_name"?: str (ours: e.g. "query")}
        -> {"object": "list", "data": [{"object": "embedding", "index": i, "embedding": [...] | "b64"}],
            "model": name, "usage": {"prompt_tokens": n, "total_tokens": n}}
    POST /rerank         {"query": str, "texts": [str], "raw_scores"?: bool, "return_text"?: bool,
                          "truncate"?: bool, "truncation_direction"?: "Right", "model"?: str}
        -> [{"index": i, "score": s, "text"?: str}, ...] best first
"""

from __future__ import annotations

import base64
import dataclasses
import numbers

import numpy as np

ENCODING_FORMATS = ("float", "base64")


class ApiError(Exception):
    """A request the server refuses: HTTP `status`, a message that says the remedy, the field."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None, kind: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}
        self.kind = kind

    # OpenAI's error object: {"error": {"message", "type", "param", "code"}}.
    def openai_body(self) -> dict:
        kind = self.kind or {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
                             413: "invalid_request_error", 429: "rate_limit_error"}.get(self.status, "server_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    # text-embeddings-inference's: {"error", "error_type"}.
    def tei_body(self) -> dict:
        kind = {429: "Overloaded", 503: "Unhealthy", 500: "Backend", 401: "Unauthorized"}.get(self.status, "Validation")
        return {"error": self.message, "error_type": kind}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _check_object(body) -> dict:
    if not isinstance(body, dict):
        raise bad_request(f"The request body must be a JSON object; got a JSON {type(body).__name__}.")
    return body


def _check_bool(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad_request(f"`{name}` must be true or false; got {value!r:.60}.", param=name)
    return value


def check_model(body: dict, served: str, kind: str) -> None:
    """`model` may be left out; when given it must be the served model's name."""
    model = body.get("model")
    if model is None:
        return
    if not isinstance(model, str):
        raise bad_request(f"`model` must be a string; got {type(model).__name__}.", param="model")
    if model != served:
        raise ApiError(404, f"The model {model!r} is not served here; this server's {kind} model is {served!r}.",
                       param="model", code="model_not_found")


# -- embeddings ---------------------------------------------------------------------------------


@dataclasses.dataclass
class EmbeddingRequest:
    texts: list[str]
    encoding_format: str = "float"
    dimensions: int | None = None
    prompt_name: str | None = None


def parse_embedding_request(body, *, served: str, dimensions: int, prompts: dict, max_texts: int) -> EmbeddingRequest:
    body = _check_object(body)
    check_model(body, served, "embedding")
    if "input" not in body:
        raise bad_request("`input` is missing: send the text to embed, a string or a list of strings.", param="input")
    raw = body["input"]
    if isinstance(raw, str):
        texts = [raw]
    elif isinstance(raw, list):
        if not raw:
            raise bad_request("`input` is an empty list; send at least one string.", param="input")
        if all(isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in raw) or any(
                isinstance(x, list) for x in raw):
            raise bad_request("`input` holds token ids; this server takes text only (a string or a list of "
                              "strings), tokenized with the model's own tokenizer.", param="input")
        for index, text in enumerate(raw):
            if not isinstance(text, str):
                raise bad_request(f"`input[{index}]` must be a string; got {type(text).__name__}.", param="input")
        texts = list(raw)
    else:
        raise bad_request(f"`input` must be a string or a list of strings; got {type(raw).__name__}.", param="input")
    for index, text in enumerate(texts):
        if not text:
            where = "`input`" if isinstance(raw, str) else f"`input[{index}]`"
            raise bad_request(f"{where} is an empty string; send text to embed.", param="input")
    if len(texts) > max_texts:
        raise ApiError(413, f"`input` holds {len(texts):,} texts; this server takes at most {max_texts:,} per "
                            "request. Split it over several requests.", param="input")

    encoding_format = body.get("encoding_format") or "float"
    if encoding_format not in ENCODING_FORMATS:
        raise bad_request(f"`encoding_format` must be one of {list(ENCODING_FORMATS)}; got {encoding_format!r:.60}.",
                          param="encoding_format")
    wanted = body.get("dimensions")
    if wanted is not None:
        if isinstance(wanted, bool) or not isinstance(wanted, numbers.Integral) or not 1 <= wanted <= dimensions:
            raise bad_request(f"`dimensions` must be an int in [1, {dimensions}] (this model's size); "
                              f"got {wanted!r:.60}.", param="dimensions")
        wanted = int(wanted)
    prompt_name = body.get("prompt_name")
    if prompt_name is not None:
        if not isinstance(prompt_name, str) or prompt_name not in prompts:
            known = sorted(prompts) or "none"
            raise bad_request(f"`prompt_name` must be one of this model's prompts ({known}); got {prompt_name!r:.60}.",
                              param="prompt_name")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise bad_request("`user` must be a string.", param="user")
    return EmbeddingRequest(texts, encoding_format, wanted, prompt_name)


def embedding_response(vectors: np.ndarray, request: EmbeddingRequest, *, model: str, tokens: int,
                       normalized: bool) -> dict:
    """OpenAI's response body; `dimensions` keeps the first dimensions (re-normalized when the
    model's embeddings are normalized, as OpenAI's shortened embeddings are)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if request.dimensions is not None and request.dimensions < vectors.shape[1]:
        vectors = vectors[:, : request.dimensions]
        if normalized:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
    if request.encoding_format == "base64":
        little_endian = vectors.astype("<f4", copy=False)
        encoded = [base64.b64encode(row.tobytes()).decode("ascii") for row in little_endian]
    else:
        encoded = vectors.tolist()
    data = [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(encoded)]
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


# -- rerank -------------------------------------------------------------------------------------


@dataclasses.dataclass
class RerankRequest:
    query: str
    texts: list[str]
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool = True


def parse_rerank_request(body, *, served: str, max_texts: int) -> RerankRequest:
    body = _check_object(body)
    check_model(body, served, "rerank")
    query = body.get("query")
    if not isinstance(query, str):
        what = "missing" if query is None else f"a {type(query).__name__}"
        raise bad_request(f"`query` must be a string; it is {what}.", param="query")
    if not query:
        raise bad_request("`query` is an empty string; send the text to rank the documents against.", param="query")
    texts = body.get("texts")
    if not isinstance(texts, list):
        what = "missing" if texts is None else f"a {type(texts).__name__}"
        raise bad_request(f"`texts` must be a list of strings (the documents to rank); it is {what}.", param="texts")
    if not texts:
        raise bad_request("`texts` is an empty list; send at least one document.", param="texts")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise bad_request(f"`texts[{index}]` must be a string; got {type(text).__name__}.", param="texts")
    if len(texts) > max_texts:
        raise ApiError(413, f"`texts` holds {len(texts):,} documents; this server takes at most {max_texts:,} per "
                            "request. Split them over several requests.", param="texts")
    direction = body.get("truncation_direction") or "Right"
    if not isinstance(direction, str) or direction.lower() != "right":
        raise bad_request(f"`truncation_direction` {direction!r:.40} is not supported: pairs are truncated as "
                          "sentence-transformers does (longest first, at the end). Send \"Right\" or leave it out.",
                          param="truncation_direction")
    return RerankRequest(query, list(texts), _check_bool(body, "raw_scores", False),
                         _check_bool(body, "return_text", False), _check_bool(body, "truncate", True))


def rerank_response(scores: np.ndarray, request: RerankRequest) -> list[dict]:
    """TEI's response: documents best first (ties keep input order)."""
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    out = []
    for index in order:
        item = {"index": index, "score": float(scores[index])}
        if request.return_text:
            item["text"] = request.texts[index]
        out.append(item)
    return out
