"""The model worker and its queue, with stand-in model functions (no model, no server):
results come back per request in order, concurrent requests share model calls within the
token and row budgets, lanes never mix, a full queue refuses at once, a timed-out request's
rows never run, a failing model call fails only its own requests, close() finishes the queue."""

import asyncio
import threading
import time

import numpy as np
import pytest

from roberta_torch.serving.batcher import BatchingLimits, ModelWorker, Overloaded, RequestTimedOut, ShuttingDown


class Recorder:
    """A lane function: each row's result is (sum of its ids, its extra); records every call."""

    def __init__(self, gate: threading.Event | None = None, fail_on: int | None = None):
        self.calls = []
        self.entered = threading.Event()  # set once a call has started
        self.gate = gate
        self.fail_on = fail_on

    def __call__(self, rows, extras):
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "the test never opened the gate"
        self.calls.append([list(r) for r in rows])
        if self.fail_on is not None and any(self.fail_on in r for r in rows):
            raise RuntimeError("model failure")
        extras = extras if extras is not None else [0] * len(rows)
        return np.array([[sum(r), e] for r, e in zip(rows, extras)], dtype=np.float32)


async def until_running(model):
    while not model.entered.is_set():
        await asyncio.sleep(0.005)


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 30))


def rows_of(seed: int, count: int):
    rng = np.random.default_rng(seed)
    return [list(rng.integers(1, 100, size=rng.integers(1, 12))) for _ in range(count)]


def test_concurrent_requests_share_batches_and_get_their_own_rows_in_order():
    model = Recorder()
    worker = ModelWorker({"a": model}, BatchingLimits(max_batch_tokens=64, max_batch_rows=16, max_wait_s=0.05))
    worker.start()
    requests = [rows_of(seed, count) for seed, count in enumerate([1, 3, 7, 2, 20, 5, 1, 9])]

    async def main():
        return await asyncio.gather(*(worker.submit("a", rows, [i] * len(rows)) for i, rows in enumerate(requests)))

    results = run(main())
    worker.close()
    for i, (rows, result) in enumerate(zip(requests, results)):
        np.testing.assert_array_equal(result, [[sum(r), i] for r in rows])
    assert len(model.calls) < len(requests)  # requests were batched together
    for call in model.calls:
        assert len(call) <= 16
        assert sum(map(len, call)) <= 64 or len(call) == 1
    assert sum(len(c) for c in model.calls) == sum(len(r) for r in requests)  # every row ran once


def test_lanes_never_share_a_model_call():
    a, b = Recorder(), Recorder()
    worker = ModelWorker({"a": a, "b": b}, BatchingLimits(max_wait_s=0.05))
    worker.start()

    async def main():
        return await asyncio.gather(worker.submit("a", [[1, 2]]), worker.submit("b", [[3]]), worker.submit("a", [[4]]))

    first, second, third = run(main())
    worker.close()
    assert first[0][0] == 3 and second[0][0] == 3 and third[0][0] == 4
    assert all(r in ([1, 2], [4]) for call in a.calls for r in call)
    assert b.calls == [[[3]]]


def test_full_queue_refuses_at_once_with_retry_after():
    gate = threading.Event()
    model = Recorder(gate)
    worker = ModelWorker({"a": model}, BatchingLimits(max_batch_tokens=4, max_wait_s=0, max_queue_tokens=10))
    worker.start()

    async def main():
        running = asyncio.ensure_future(worker.submit("a", [[1, 1, 1, 1]]))  # taken by the worker, blocks
        await until_running(model)
        queued = [asyncio.ensure_future(worker.submit("a", [[2] * 4])) for _ in range(2)]  # 8 of 10 tokens
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(Overloaded) as refused:
            await worker.submit("a", [[3] * 4])
        assert time.monotonic() - started < 1  # at once, not after waiting
        assert refused.value.retry_after >= 1
        gate.set()
        return await running, await asyncio.gather(*queued)

    first, rest = run(main())
    worker.close()
    assert first[0][0] == 4 and all(r[0][0] == 8 for r in rest)


def test_timed_out_rows_never_reach_the_model():
    gate = threading.Event()
    model = Recorder(gate)
    worker = ModelWorker({"a": model}, BatchingLimits(max_batch_tokens=2, max_wait_s=0))
    worker.start()

    async def main():
        blocking = asyncio.ensure_future(worker.submit("a", [[1, 1]]))
        await until_running(model)
        with pytest.raises(RequestTimedOut):
            await worker.submit("a", [[7, 7], [7, 7]], deadline=time.monotonic() + 0.1)
        assert worker.queued == (0, 0)  # its rows left the queue
        gate.set()
        await blocking
        return await worker.submit("a", [[5]])

    assert run(main())[0][0] == 5
    worker.close()
    assert not any(7 in row for call in model.calls for row in call)


def test_a_failing_model_call_fails_its_requests_only():
    model = Recorder(fail_on=13)
    worker = ModelWorker({"a": model}, BatchingLimits(max_wait_s=0))
    worker.start()

    async def main():
        with pytest.raises(RuntimeError, match="model failure"):
            await worker.submit("a", [[13]])
        return await worker.submit("a", [[1, 2]])

    assert run(main())[0][0] == 3
    worker.close()


def test_close_finishes_the_queue_then_refuses():
    gate = threading.Event()
    model = Recorder(gate)
    worker = ModelWorker({"a": model}, BatchingLimits(max_batch_tokens=1, max_wait_s=0))
    worker.start()

    async def main():
        pending = [asyncio.ensure_future(worker.submit("a", [[i]])) for i in range(5)]
        await until_running(model)
        closer = threading.Thread(target=worker.close, args=(10,))
        closer.start()
        gate.set()
        results = await asyncio.gather(*pending)
        closer.join(10)
        with pytest.raises(ShuttingDown):
            await worker.submit("a", [[1]])
        return results

    results = run(main())
    assert [r[0][0] for r in results] == [0, 1, 2, 3, 4]
    assert not worker.alive


def test_limits_are_checked():
    with pytest.raises(ValueError, match="max_batch_tokens"):
        BatchingLimits(max_batch_tokens=0)
    with pytest.raises(ValueError, match="max_wait_s"):
        BatchingLimits(max_wait_s=-1)
    with pytest.raises(ValueError, match="lanes"):
        ModelWorker({})
