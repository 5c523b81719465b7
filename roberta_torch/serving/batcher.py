"""Dynamic batching: one model worker thread per process, fed by a bounded queue.

Requests arrive on the event loop as token-id rows (already tokenized) and wait in one FIFO
queue. The worker thread owns the models: it takes the oldest request's lane (embedding or
reranking), gathers that lane's waiting rows in arrival order up to a token budget, runs them
as ONE call (the model sorts them by length and runs padding-free batches), and hands each
request its rows back in order. The event loop never runs a model.

    worker = ModelWorker({"embed": run_embed}, BatchingLimits(...), metrics)
    worker.start()
    result = await worker.submit("embed", rows, extras, deadline)   # rows' results, in order
    worker.close()                                                  # finishes what is queued

Bounded: a request that would push the queue past `max_queue_tokens` is refused at once with
`Overloaded` (its `retry_after` estimates when the queue will have drained); one that is not
done by its deadline raises `RequestTimedOut` and its rows that have not started are dropped.
A batch is cut when it holds `max_batch_tokens` tokens or `max_batch_rows` rows, or when its
oldest row has waited `max_wait_s` (an idle worker starts at once when the queue is empty
after that wait: under load, rows pile up while the previous batch runs).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import threading
import time
from typing import Callable

import numpy as np

logger = logging.getLogger(__name__)


class Overloaded(Exception):
    """The queue is full; retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class RequestTimedOut(Exception):
    """The request was not done by its deadline."""


class ShuttingDown(Exception):
    """The worker is closing and takes no new requests."""


@dataclasses.dataclass(frozen=True)
class BatchingLimits:
    max_batch_tokens: int = 16384  # tokens (special tokens included) in one model call
    max_batch_rows: int = 256  # texts / pairs in one model call
    max_wait_s: float = 0.002  # how long the oldest row may wait for company
    max_queue_tokens: int = 1 << 19  # tokens waiting, at most; beyond: Overloaded (HTTP 429)

    def __post_init__(self):
        for name in ("max_batch_tokens", "max_batch_rows", "max_queue_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an int >= 1; got {value!r}.")
        if not isinstance(self.max_wait_s, (int, float)) or not 0 <= self.max_wait_s <= 10:
            raise ValueError(f"`max_wait_s` must be a number of seconds in [0, 10]; got {self.max_wait_s!r}.")


@dataclasses.dataclass(eq=False)
class _Job:
    lane: str
    rows: list  # token-id rows
    extras: list | None  # per-row values the lane's function takes beside the rows (or None)
    tokens: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    enqueued_at: float
    next_row: int = 0  # rows handed to the model so far
    done_rows: int = 0
    results: list | None = None  # per-row results, filled as batches finish
    cancelled: bool = False
    started: bool = False

    @property
    def pending_tokens(self) -> int:
        return sum(len(r) for r in self.rows[self.next_row:])


def _resolve(job: _Job, value=None, error: BaseException | None = None) -> None:
    """Complete the job's future from the worker thread (futures belong to the event loop)."""

    def complete():
        if job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(value)

    try:
        job.loop.call_soon_threadsafe(complete)
    except RuntimeError:  # the loop is closed: nobody waits any more
        pass


class ModelWorker:
    """The one thread that runs the models, and the queue in front of it.

    `lanes`: name -> function(rows, extras) -> array with one result per row (in row order),
    called on the worker thread only. `metrics`: a `ServerMetrics` or None.
    """

    def __init__(self, lanes: dict[str, Callable], limits: BatchingLimits | None = None, metrics=None):
        if not lanes:
            raise ValueError("`lanes` must name at least one model function.")
        self.lanes = dict(lanes)
        self.limits = limits or BatchingLimits()
        self.metrics = metrics
        self._condition = threading.Condition()
        self._queue: list[_Job] = []
        self._queued_tokens = 0
        self._queued_rows = 0
        self._closing = False
        self._thread: threading.Thread | None = None
        self._tokens_per_second = 0.0  # moving average, for Retry-After
        self.batches_run = 0

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("The worker is already started.")
        self._thread = threading.Thread(target=self._loop, name="roberta-torch-model-worker", daemon=True)
        self._thread.start()

    def close(self, timeout: float | None = None) -> None:
        """Take no new requests, finish the queued ones, stop the thread."""
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("The model worker did not finish its queue within %.0f s.", timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._closing

    @property
    def queued(self) -> tuple[int, int]:
        """(rows, tokens) waiting for the model."""
        return self._queued_rows, self._queued_tokens

    # -- the event loop's side ----------------------------------------------------------------

    async def submit(self, lane: str, rows: list, extras: list | None = None, deadline: float | None = None):
        """Queue `rows` on `lane`; return the lane's results for them (a list, in row order).

        Raises Overloaded (queue full), RequestTimedOut (past `deadline`, a time.monotonic()
        value), ShuttingDown, or what the model function raised."""
        if lane not in self.lanes:
            raise KeyError(f"No model lane {lane!r}; lanes: {sorted(self.lanes)}.")
        if not rows:
            return []
        loop = asyncio.get_running_loop()
        tokens = sum(len(r) for r in rows)
        job = _Job(lane, list(rows), extras, tokens, loop, loop.create_future(), time.monotonic())
        with self._condition:
            if self._closing or self._thread is None:
                raise ShuttingDown("The server is shutting down.")
            if self._queued_tokens + tokens > self.limits.max_queue_tokens:
                raise Overloaded(
                    f"The queue holds {self._queued_tokens:,} tokens and this request {tokens:,}; the limit is "
                    f"{self.limits.max_queue_tokens:,}. Retry later.",
                    self._retry_after(),
                )
            self._queue.append(job)
            self._queued_tokens += tokens
            self._queued_rows += len(rows)
            self._update_queue_gauges()
            self._condition.notify()
        try:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            return await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError) as error:
            self._cancel(job)
            job.future.cancel()  # nobody waits for it any more
            if isinstance(error, asyncio.TimeoutError):
                raise RequestTimedOut("The request was not done by its deadline.") from None
            raise

    def _cancel(self, job: _Job) -> None:
        """Drop the rows of `job` that have not reached the model."""
        with self._condition:
            if job.cancelled:
                return
            job.cancelled = True
            if job in self._queue:
                self._queue.remove(job)
                pending = self._pending_rows(job)
                self._queued_tokens -= job.pending_tokens
                self._queued_rows -= pending
                job.next_row = len(job.rows)
                self._update_queue_gauges()

    def _retry_after(self) -> int:
        """Seconds until the queue has drained, at the recent throughput (1 to 60)."""
        if self._tokens_per_second <= 0:
            return 1
        return int(min(60, max(1, math.ceil(self._queued_tokens / self._tokens_per_second))))

    # -- the worker thread --------------------------------------------------------------------

    @staticmethod
    def _pending_rows(job: _Job) -> int:
        return len(job.rows) - job.next_row

    def _update_queue_gauges(self) -> None:
        if self.metrics is not None:
            self.metrics.set_queue(self._queued_rows, self._queued_tokens)

    def _take_batch(self):
        """Under the lock: [(job, start, stop)] of one lane, oldest first, within the budget."""
        lane = self._queue[0].lane
        limits = self.limits
        taken, tokens, rows = [], 0, 0
        for job in list(self._queue):
            if job.lane != lane:
                continue
            start = stop = job.next_row
            while stop < len(job.rows):
                length = len(job.rows[stop])
                if rows and (tokens + length > limits.max_batch_tokens or rows + 1 > limits.max_batch_rows):
                    break
                tokens += length
                rows += 1
                stop += 1
            if stop > start:
                taken.append((job, start, stop))
                job.next_row = stop
                self._queued_tokens -= sum(len(r) for r in job.rows[start:stop])
                self._queued_rows -= stop - start
                if job.next_row == len(job.rows):
                    self._queue.remove(job)
            if stop < len(job.rows):
                break  # the budget is spent
        self._update_queue_gauges()
        return lane, taken, tokens, rows

    def _ready(self) -> bool:
        """Under the lock: whether to cut a batch now rather than wait for more rows."""
        if self._closing:
            return True
        oldest = self._queue[0]
        waited = time.monotonic() - oldest.enqueued_at
        full = self._queued_tokens >= self.limits.max_batch_tokens or self._queued_rows >= self.limits.max_batch_rows
        return full or waited >= self.limits.max_wait_s

    def _loop(self) -> None:
        while True:
            with self._condition:
                while not self._queue and not self._closing:
                    self._condition.wait()
                if not self._queue:
                    return  # closing, and nothing left
                while not self._ready():
                    wait = self.limits.max_wait_s - (time.monotonic() - self._queue[0].enqueued_at)
                    self._condition.wait(max(wait, 0.0))
                    if not self._queue:
                        break
                if not self._queue:
                    continue
                lane, taken, tokens, rows = self._take_batch()
            self._run(lane, taken, tokens, rows)

    def _run(self, lane: str, taken, tokens: int, rows: int) -> None:
        now = time.monotonic()
        batch_rows, batch_extras = [], []
        for job, start, stop in taken:
            if not job.started:
                job.started = True
                if self.metrics is not None:
                    self.metrics.observe_queue_wait(lane, now - job.enqueued_at)
            batch_rows.extend(job.rows[start:stop])
            if job.extras is not None:
                batch_extras.extend(job.extras[start:stop])
        try:
            results = self.lanes[lane](batch_rows, batch_extras if batch_extras else None)
        except BaseException as error:  # reported to every request in the batch, the worker lives on
            logger.exception("The %s model failed on a batch of %d rows.", lane, rows)
            for job, _, _ in taken:
                with self._condition:
                    if job in self._queue:
                        self._queue.remove(job)
                        self._queued_tokens -= job.pending_tokens
                        self._queued_rows -= self._pending_rows(job)
                        job.next_row = len(job.rows)
                if not job.cancelled:
                    _resolve(job, error=error)
            return
        elapsed = time.monotonic() - now
        self.batches_run += 1
        if elapsed > 0:
            rate = tokens / elapsed
            self._tokens_per_second = rate if self._tokens_per_second == 0 else 0.8 * self._tokens_per_second + 0.2 * rate
        if self.metrics is not None:
            self.metrics.observe_batch(lane, rows, tokens, elapsed)
        offset = 0
        for job, start, stop in taken:
            count = stop - start
            if job.results is None:
                job.results = [None] * len(job.rows)
            job.results[start:stop] = list(results[offset: offset + count])
            offset += count
            job.done_rows += count
            if job.done_rows == len(job.rows) and not job.cancelled:
                _resolve(job, np.stack(job.results) if isinstance(results, np.ndarray) else job.results)
