"""The HTTP server against the library it serves, over loopback with real clients (the
`openai` client and httpx), every wait bounded: OpenAI embeddings equal TextEmbedder.encode,
/rerank equals CrossEncoder.rank, concurrent clients get their own results, bad input gets
4xx JSON (never 500), overload gets 429 + Retry-After, timeouts 503, the API key is enforced,
/metrics is Prometheus text, and SIGTERM finishes the requests in flight."""

import asyncio
import base64
import json
import signal
import threading
import time

import numpy as np
import pytest

import roberta_torch
from helpers.cross_encoder_dirs import DOCUMENTS, QUERY, cross_encoder_dir
from helpers.sentence_transformers_dirs import TEXTS, sentence_transformers_dir
from helpers.servers import ServeProcess, app_server

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
pytest.importorskip("sentence_transformers")  # writes the model directories

from roberta_torch.serving import ServerSettings, create_app  # noqa: E402
from roberta_torch.serving.services import EmbeddingService, RerankService  # noqa: E402

ATOL = 1e-5
WORDS = [t for t in TEXTS if t]  # the server refuses empty strings, as OpenAI's API does
EMBEDDING_NAME, RERANK_NAME = "tiny-embedder", "tiny-reranker"


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve_models")
    embedding = sentence_transformers_dir(root, "roberta", pooling="mean", normalize=True, include_prompt=False,
                                          prompts={"query": "query: ", "passage": "passage: "})
    return embedding, cross_encoder_dir(root, "xlm-roberta", 1, max_length=24, seed=3)


@pytest.fixture(scope="module")
def models(model_dirs):
    return roberta_torch.TextEmbedder.from_preset(str(model_dirs[0])), roberta_torch.CrossEncoder.from_preset(str(model_dirs[1]))


def make_app(models, model_dirs, embedding_wrapper=None, **overrides):
    settings = ServerSettings(model=str(model_dirs[0]), reranker=str(model_dirs[1]), model_name=EMBEDDING_NAME,
                              reranker_name=RERANK_NAME, **{"max_wait_ms": 20.0, **overrides})
    embedding = EmbeddingService(models[0], EMBEDDING_NAME, settings.max_batch_rows, settings.max_batch_tokens)
    if embedding_wrapper is not None:
        embedding = embedding_wrapper(embedding)
    rerank = RerankService(models[1], RERANK_NAME, settings.max_batch_rows, settings.max_batch_tokens)
    return create_app(settings, embedding, rerank)


@pytest.fixture(scope="module")
def server(models, model_dirs):
    app = make_app(models, model_dirs)
    with app_server(app) as url:
        yield url, app.state.server


def post(url, path, body, **kwargs):
    return httpx.post(url + path, content=body if isinstance(body, (bytes, str)) else json.dumps(body),
                      timeout=30, **kwargs)


# -- equality with the library -------------------------------------------------------------------


def test_openai_client_embeddings_equal_encode(server, models):
    openai = pytest.importorskip("openai")
    url, _ = server
    embedder = models[0]
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=30)
    assert [m.id for m in client.models.list().data] == [EMBEDDING_NAME, RERANK_NAME]

    expected = embedder.encode(WORDS)
    response = client.embeddings.create(model=EMBEDDING_NAME, input=WORDS)  # the client asks for base64
    assert [d.index for d in response.data] == list(range(len(WORDS)))
    np.testing.assert_allclose([d.embedding for d in response.data], expected, atol=ATOL)
    rows, _ = embedder.tokenize(WORDS)
    assert response.usage.prompt_tokens == response.usage.total_tokens == sum(map(len, rows))
    assert response.model == EMBEDDING_NAME

    floats = client.embeddings.create(model=EMBEDDING_NAME, input=WORDS, encoding_format="float")
    np.testing.assert_allclose([d.embedding for d in floats.data], expected, atol=ATOL)
    single = client.embeddings.create(model=EMBEDDING_NAME, input=WORDS[0])
    np.testing.assert_allclose(single.data[0].embedding, expected[0], atol=ATOL)

    query = client.embeddings.create(model=EMBEDDING_NAME, input=WORDS, extra_body={"prompt_name": "query"})
    np.testing.assert_allclose([d.embedding for d in query.data], embedder.encode(WORDS, prompt_name="query"), atol=ATOL)

    short = client.embeddings.create(model=EMBEDDING_NAME, input=WORDS, dimensions=5)
    truncated = expected[:, :5] / np.linalg.norm(expected[:, :5], axis=1, keepdims=True)  # normalized model
    np.testing.assert_allclose([d.embedding for d in short.data], truncated, atol=ATOL)


def test_base64_is_little_endian_float32(server, models):
    url, _ = server
    body = post(url, "/v1/embeddings", {"input": WORDS[:2], "encoding_format": "base64"}).json()
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in body["data"]]
    np.testing.assert_allclose(decoded, models[0].encode(WORDS[:2]), atol=ATOL)


def test_rerank_equals_cross_encoder_rank(server, models):
    url, _ = server
    cross_encoder = models[1]
    response = post(url, "/rerank", {"query": QUERY, "texts": DOCUMENTS, "return_text": True, "model": RERANK_NAME})
    assert response.status_code == 200, response.text
    expected = cross_encoder.rank(QUERY, DOCUMENTS, return_documents=True)
    got = response.json()
    assert [r["index"] for r in got] == [r["corpus_id"] for r in expected]
    np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in expected], atol=ATOL)
    assert [r["text"] for r in got] == [r["text"] for r in expected]

    raw = post(url, "/rerank", {"query": QUERY, "texts": DOCUMENTS, "raw_scores": True}).json()
    logits = cross_encoder.predict([(QUERY, d) for d in DOCUMENTS], activation_fn="identity")
    np.testing.assert_allclose([r["score"] for r in sorted(raw, key=lambda r: r["index"])], logits, atol=ATOL)
    assert "text" not in raw[0]

    too_long = post(url, "/rerank", {"query": QUERY, "texts": DOCUMENTS, "truncate": False})
    assert too_long.status_code == 413 and "truncate" in too_long.json()["error"]


def test_concurrent_clients_get_their_own_results(server, models):
    """Mixed embedding (with and without prompts) and rerank requests at once: each client gets
    its own rows, in its order, and requests share model calls."""
    url, state = server
    embedder, cross_encoder = models
    rng = np.random.default_rng(0)
    jobs = []
    for i in range(24):
        texts = [WORDS[j] + f" {i}" for j in rng.permutation(len(WORDS))[: rng.integers(1, 5)]]
        if i % 4 == 3:
            jobs.append(("/rerank", {"query": f"{QUERY} {i}", "texts": texts}, texts))
        else:
            prompt = [None, "query", "passage"][i % 3]
            jobs.append(("/v1/embeddings", {"input": texts, "prompt_name": prompt, "encoding_format": "float"}, texts))

    async def main():
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            return await asyncio.gather(*(client.post(path, json=body) for path, body, _ in jobs))

    batches_before = state.worker.batches_run
    responses = asyncio.run(asyncio.wait_for(main(), 120))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    for (path, body, texts), response in zip(jobs, responses):
        if path == "/rerank":
            expected = cross_encoder.rank(body["query"], texts)
            assert [r["index"] for r in response.json()] == [r["corpus_id"] for r in expected]
            np.testing.assert_allclose([r["score"] for r in response.json()], [r["score"] for r in expected], atol=ATOL)
        else:
            got = [d["embedding"] for d in response.json()["data"]]
            np.testing.assert_allclose(got, embedder.encode(texts, prompt_name=body["prompt_name"]), atol=ATOL)
    assert state.worker.batches_run - batches_before < len(jobs)


# -- bad input, limits --------------------------------------------------------------------------


BAD_REQUESTS = [
    ("/v1/embeddings", {}, 400, "`input` is missing"),
    ("/v1/embeddings", {"input": []}, 400, "empty list"),
    ("/v1/embeddings", {"input": ""}, 400, "empty string"),
    ("/v1/embeddings", {"input": ["a", ""]}, 400, r"`input[1]` is an empty string"),
    ("/v1/embeddings", {"input": 42}, 400, "string or a list of strings"),
    ("/v1/embeddings", {"input": ["a", 3]}, 400, "`input[1]` must be a string"),
    ("/v1/embeddings", {"input": [1, 2, 3]}, 400, "token ids"),
    ("/v1/embeddings", {"input": [[1, 2]]}, 400, "token ids"),
    ("/v1/embeddings", {"input": "a", "encoding_format": "int8"}, 400, "`encoding_format`"),
    ("/v1/embeddings", {"input": "a", "dimensions": 0}, 400, "`dimensions`"),
    ("/v1/embeddings", {"input": "a", "dimensions": 17}, 400, "[1, 16]"),
    ("/v1/embeddings", {"input": "a", "dimensions": True}, 400, "`dimensions`"),
    ("/v1/embeddings", {"input": "a", "prompt_name": "nope"}, 400, "`prompt_name`"),
    ("/v1/embeddings", {"input": "a", "model": "gpt-4"}, 404, "not served here"),
    ("/v1/embeddings", {"input": "a", "model": 3}, 400, "`model` must be a string"),
    ("/v1/embeddings", [1, 2], 400, "JSON object"),
    ("/v1/embeddings", b"{not json", 400, "not valid JSON"),
    ("/v1/embeddings", b"", 400, "body is empty"),
    ("/v1/embeddings", b'"' + b"[" * 100000 + b'"', 400, "JSON"),
    ("/rerank", {"texts": ["a"]}, 400, "`query` must be a string; it is missing"),
    ("/rerank", {"query": "", "texts": ["a"]}, 400, "`query` is an empty string"),
    ("/rerank", {"query": "q", "texts": []}, 400, "`texts` is an empty list"),
    ("/rerank", {"query": "q", "texts": "a"}, 400, "`texts` must be a list"),
    ("/rerank", {"query": "q", "texts": ["a", None]}, 400, "`texts[1]`"),
    ("/rerank", {"query": "q", "texts": ["a"], "raw_scores": "yes"}, 400, "`raw_scores`"),
    ("/rerank", {"query": "q", "texts": ["a"], "truncation_direction": "Left"}, 400, "`truncation_direction`"),
    ("/rerank", {"query": "q", "texts": ["a"], "model": "other"}, 404, "not served here"),
]


@pytest.mark.parametrize("path, body, status, words", BAD_REQUESTS, ids=[f"{p}-{w[:24]}" for p, _, _, w in BAD_REQUESTS])
def test_bad_input_gets_a_4xx_json_error(server, path, body, status, words):
    url, _ = server
    response = post(url, path, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    message = error if path == "/rerank" else error["message"]
    assert words in message


def test_wrong_routes_and_methods_are_json(server):
    url, _ = server
    for response, status in ((httpx.get(url + "/v1/embeddings", timeout=10), 405),
                             (httpx.post(url + "/v1/chat/completions", json={}, timeout=10), 404)):
        assert response.status_code == status and "Routes:" in response.json()["error"]["message"]


@pytest.fixture(scope="module")
def guarded_server(models, model_dirs):
    app = make_app(models, model_dirs, api_key="s3cret-key", max_request_bytes=2000, max_texts_per_request=4,
                   max_tokens_per_request=60, max_queue_tokens=1000)
    with app_server(app) as url:
        yield url


def test_api_key_is_required_except_for_health(guarded_server):
    openai = pytest.importorskip("openai")
    url = guarded_server
    assert httpx.get(url + "/health", timeout=10).status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-key"}):
        response = post(url, "/v1/embeddings", {"input": "a"}, headers=headers)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert "API key" in response.json()["error"]["message"]
    assert httpx.get(url + "/metrics", timeout=10).status_code == 401
    assert post(url, "/rerank", {"query": "q", "texts": ["a"]}).json()["error_type"] == "Unauthorized"
    client = openai.OpenAI(base_url=url + "/v1", api_key="s3cret-key", max_retries=0, timeout=30)
    assert len(client.embeddings.create(model=EMBEDDING_NAME, input="a").data) == 1
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0).embeddings.create(model=EMBEDDING_NAME, input="a")


@pytest.mark.parametrize("body, words", [
    ({"input": "x" * 3000}, "--max-request-bytes"),
    ({"input": ["a", "b", "c", "d", "e"]}, "at most 4 per request"),
    ({"input": ["one two three four five six seven eight nine ten eleven twelve"] * 4}, "--max-tokens-per-request"),
])
def test_limits_per_request_get_413(guarded_server, body, words):
    response = post(guarded_server, "/v1/embeddings", body, headers={"Authorization": "Bearer s3cret-key"})
    assert response.status_code == 413 and words in response.json()["error"]["message"]


class Gated:
    """A service whose model calls wait for `gate` (and count the rows they ran)."""

    def __init__(self, inner):
        self.inner, self.gate, self.entered, self.rows_run = inner, threading.Event(), threading.Event(), []
        self.gate.set()  # open for the warm-up

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def run(self, rows, extras):
        self.entered.set()
        assert self.gate.wait(30)
        self.rows_run.extend(rows)
        return self.inner.run(rows, extras)


def test_overload_gets_429_with_retry_after_and_the_queue_recovers(models, model_dirs):
    services = []

    def wrap(service):
        services.append(Gated(service))
        return services[0]

    app = make_app(models, model_dirs, embedding_wrapper=wrap, max_wait_ms=0.0, max_queue_tokens=40,
                   max_tokens_per_request=40)
    with app_server(app) as url:
        gated = services[0]
        gated.gate.clear()
        gated.entered.clear()

        async def main():
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                first = asyncio.ensure_future(client.post("/v1/embeddings", json={"input": "the first request"}))
                while not gated.entered.is_set():
                    await asyncio.sleep(0.01)
                more = [asyncio.ensure_future(client.post("/v1/embeddings", json={"input": f"queued request {i}"}))
                        for i in range(8)]
                while not any(f.done() for f in more):  # the ones over the limit come back at once
                    await asyncio.sleep(0.01)
                gated.gate.set()
                return [await first] + list(await asyncio.gather(*more))

        responses = asyncio.run(asyncio.wait_for(main(), 120))
        statuses = [r.status_code for r in responses]
        assert statuses[0] == 200 and 429 in statuses and statuses.count(200) >= 3, statuses
        refused = [r for r in responses if r.status_code == 429]
        assert all(int(r.headers["retry-after"]) >= 1 and "overloaded" in r.json()["error"]["message"] for r in refused)
        assert refused[0].json()["error"]["type"] == "rate_limit_error"
        assert post(url, "/v1/embeddings", {"input": "after"}).status_code == 200
        metrics = httpx.get(url + "/metrics", timeout=10).text
        assert 'roberta_torch_requests_total{route="/v1/embeddings",status="429"}' in metrics


def test_timeout_gets_503_and_its_rows_never_run(models, model_dirs):
    services = []

    def wrap(service):
        services.append(Gated(service))
        return services[0]

    app = make_app(models, model_dirs, embedding_wrapper=wrap, max_wait_ms=0.0, request_timeout_s=0.5)
    with app_server(app) as url:
        gated = services[0]
        gated.gate.clear()
        gated.entered.clear()
        gated.rows_run.clear()

        async def main():
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                first = asyncio.ensure_future(client.post("/v1/embeddings", json={"input": "blocks the worker"}))
                while not gated.entered.is_set():
                    await asyncio.sleep(0.01)
                started = time.monotonic()
                second = await client.post("/v1/embeddings", json={"input": "never runs"})
                waited = time.monotonic() - started
                gated.gate.set()
                return await first, second, waited

        first, second, waited = asyncio.run(asyncio.wait_for(main(), 60))
        assert first.status_code == second.status_code == 503 and 0.3 < waited < 10
        assert "--request-timeout" in second.json()["error"]["message"] and second.headers["retry-after"] == "1"
        assert post(url, "/v1/embeddings", {"input": "after"}).status_code == 200
        rows_run = [models[0].tokenizer.detokenize(r) for r in gated.rows_run]
        assert not any("never runs" in text for text in rows_run)


def test_health_and_prometheus_metrics(server):
    from prometheus_client.parser import text_string_to_metric_families

    url, _ = server
    assert post(url, "/v1/embeddings", {"input": WORDS}).status_code == 200
    assert post(url, "/rerank", {"query": QUERY, "texts": DOCUMENTS}).status_code == 200
    health = httpx.get(url + "/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    response = httpx.get(url + "/metrics", timeout=10)
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    for name in ("roberta_torch_requests", "roberta_torch_request_duration_seconds", "roberta_torch_tokens",
                 "roberta_torch_inputs", "roberta_torch_queue_rows", "roberta_torch_queue_tokens",
                 "roberta_torch_queue_wait_seconds", "roberta_torch_batch_rows", "roberta_torch_batch_tokens",
                 "roberta_torch_batch_duration_seconds"):
        assert name in families, name
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("roberta_torch_requests_total", (("route", "/rerank"), ("status", "200")))] >= 1
    assert samples[("roberta_torch_inputs_total", (("route", "/v1/embeddings"),))] >= len(WORDS)
    assert samples[("roberta_torch_batch_rows_count", (("model", "rerank"),))] >= 1


# -- the command line: a real process, SIGTERM with requests in flight ----------------------------


def test_sigterm_finishes_requests_in_flight(model_dirs, models):
    """Requests waiting in the queue when SIGTERM arrives are answered; then the process exits."""
    serve = ServeProcess([str(model_dirs[0]), "--model-name", EMBEDDING_NAME, "--max-wait-ms", "2000",
                          "--max-batch-tokens", "100000", "--max-batch-size", "1000", "--no-access-log"])
    try:
        requests = [[f"{WORDS[i % len(WORDS)]} {i}", f"text {i}"] for i in range(6)]
        results = [None] * len(requests)

        def send(i):
            results[i] = httpx.post(serve.url + "/v1/embeddings", json={"input": requests[i]}, timeout=60)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while httpx.get(serve.url + "/health", timeout=10).json()["queue_rows"] < 2 * len(requests):
            assert time.monotonic() < deadline, serve.output
            time.sleep(0.02)
        serve.process.terminate()  # SIGTERM while every request waits in the queue
        for thread in threads:
            thread.join(60)
        code = serve.stop()
    finally:
        serve.stop()
    # uvicorn exits by re-raising the signal it handled, after its graceful shutdown.
    assert code in (0, -signal.SIGTERM), serve.output
    assert all(r is not None and r.status_code == 200 for r in results), serve.output
    for texts, response in zip(requests, results):
        np.testing.assert_allclose([d["embedding"] for d in response.json()["data"]], models[0].encode(texts), atol=ATOL)
    assert "Model worker stopped" in serve.output


def test_workers_processes_and_api_key_from_the_environment(model_dirs, models):
    """--workers 2 (uvicorn's process manager, settings through the environment), reranker only."""
    serve = ServeProcess(["--reranker", str(model_dirs[1]), "--workers", "2", "--no-access-log"],
                         env={"ROBERTA_TORCH_API_KEY": "env-key"})
    try:
        headers = {"Authorization": "Bearer env-key"}
        deadline = time.monotonic() + 120
        while True:  # workers start after the socket is bound
            try:
                response = post(serve.url, "/rerank", {"query": QUERY, "texts": DOCUMENTS}, headers=headers)
                if response.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, serve.output
            time.sleep(0.2)
        expected = models[1].rank(QUERY, DOCUMENTS)
        assert [r["index"] for r in response.json()] == [r["corpus_id"] for r in expected]
        assert post(serve.url, "/rerank", {"query": QUERY, "texts": DOCUMENTS}).status_code == 401
        assert post(serve.url, "/v1/embeddings", {"input": "a"}, headers=headers).status_code == 404
    finally:
        code = serve.stop()
    assert code in (0, -signal.SIGTERM), serve.output


def test_settings_and_command_line_refusals(capsys):
    from roberta_torch.cli import main

    assert main(["serve"]) == 1
    assert "PRESET" in capsys.readouterr().err
    with pytest.raises(ValueError, match="max-tokens-per-request"):
        ServerSettings(model="m", max_tokens_per_request=10, max_queue_tokens=5)
    with pytest.raises(ValueError, match="port"):
        ServerSettings(model="m", port=70000)
    with pytest.raises(ValueError, match="max_wait_s"):
        ServerSettings(model="m", max_wait_ms=60000)
    with pytest.raises(ValueError, match="api-key"):
        ServerSettings(model="m", api_key="")
    settings = ServerSettings(model="m", reranker="r", api_key="the-key", max_batch_tokens=123)
    environment = settings.to_environment()
    assert "the-key" not in environment["ROBERTA_TORCH_SERVE_SETTINGS"]  # the key travels on its own
    import os
    from unittest import mock

    with mock.patch.dict(os.environ, environment):
        assert ServerSettings.from_environment() == settings


def test_the_command_line_imports_no_server_library_until_serve_runs():
    from helpers.subprocesses import run_python

    script = ("import sys; import roberta_torch.cli; roberta_torch.cli.build_parser(); "
              "print([m for m in ('starlette', 'uvicorn', 'prometheus_client', 'fastapi') if m in sys.modules])")
    assert run_python(script, {}).strip().splitlines()[-1] == "[]"


def test_quantize_int8_serves_quantized_models(model_dirs, models):
    # `roberta-torch serve --quantize int8`: both models loaded as from_preset(quantize="int8").
    from roberta_torch import quantization
    from roberta_torch.serving.services import load_services

    with pytest.raises(ValueError, match="quantize"):
        ServerSettings(model="m", quantize="int4")
    with pytest.raises(ValueError, match="CPU only"):
        ServerSettings(model="m", quantize="int8", device="cuda")
    settings = ServerSettings(model=str(model_dirs[0]), reranker=str(model_dirs[1]), quantize="int8")
    embedding, rerank = load_services(settings)
    assert quantization.is_quantized(embedding.embedder) and quantization.is_quantized(rerank.cross_encoder)
    quantized = embedding.embedder.encode(WORDS)
    expected = models[0].encode(WORDS)
    assert (quantized * expected).sum(1).min() > 0.99 and np.abs(quantized - expected).max() > 1e-6
