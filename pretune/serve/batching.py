"""Dynamic batching: the texts of concurrent requests merged into few model calls, each request answered with its
own rows.

    request handler                      batcher loop (event loop)                  model thread (one)
    submit(payloads, lengths)  ─queue─▶  while other requests are on their way, the
      awaits its future                  oldest text waits up to max_wait for them, or
                                         less once max_batch_size texts wait; take
                                         the oldest (up to WINDOW batches
                                         of texts), sort them by length and cut them
                                         into batches of max_batch_size  ──────────▶ predict(payloads) -> rows
      ◀─ its future gets its rows once   each row goes back to its request  ◀──────
         every one of its texts has one

The model runs in its own thread, one call at a time, so the event loop keeps accepting requests while it works and
the texts that arrive meanwhile form the next batch. Waiting for company pays only when company is coming: a request
counts as on its way from when its handler starts reading it until it submits its texts (``on_the_way``), and with
none on the way a lone request runs at once, so one client sees the model's own latency, not ``max_wait`` more; and
when its text's last lone call took under ``inline_s`` (a small model), it runs on the event loop's own thread,
since the hop to the model thread and back (about half a millisecond on a busy CPU) would be a good part of its
call: the loop is held meanwhile, briefly, while nobody else waits. Sorting by length keeps the padding low when a
window holds short and long texts. A request whose client went away is cancelled: its texts are skipped if they have
not run yet, and its rows are dropped if they have; the other requests of the batch are not affected. If a model
call fails, its texts are tried again request by request, so that one request's failure is not its neighbours'.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

WINDOW = 4  # batches' worth of waiting texts sorted by length together
INLINE_S = 0.010  # a lone text runs on the event loop when the last lone call took less


class BatcherClosed(RuntimeError):
    """The server is shutting down and takes no new texts."""


class BatcherFull(RuntimeError):
    """So many texts wait already that new ones would only time out."""


@dataclass(eq=False)
class _Request:
    future: asyncio.Future
    results: list
    remaining: int


@dataclass(eq=False)
class _Item:
    request: _Request
    index: int  # position of this text in its request
    payload: Any
    length: int  # its size (characters, or tokens with --on-long refuse), for grouping only
    arrived: float = field(default=0.0)  # loop time


class Batcher:
    """Merges the texts of concurrent ``submit`` calls into calls of ``predict(payloads) -> rows`` (same order).

    Args:
        predict: runs the model on a list of payloads and returns one result per payload; called in a thread.
        max_batch_size: texts per model call at most.
        max_wait_s: how long the oldest waiting text waits for the requests on their way (``on_the_way``) before
            its batch runs; with none on the way it runs at once.
        max_queue: texts waiting at most; a request that would exceed it is refused (None: no limit).
        on_batch: ``(texts, seconds)`` after each model call (metrics).
        inline_s: a lone text (none other waiting or on its way) runs on the event loop's thread when the last
            lone call took less than this; 0: every call runs in the model thread.
    """

    def __init__(self, predict: Callable[[list], list], *, max_batch_size: int, max_wait_s: float,
                 max_queue: Optional[int] = None, on_batch: Optional[Callable[[int, float], None]] = None,
                 inline_s: float = INLINE_S):
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self._closing = False
        self._task: Optional[asyncio.Task] = None
        self._executor: Optional[ThreadPoolExecutor] = None
        self._coming = 0  # requests being read and tokenized, whose texts will be submitted soon
        self.inline_s = inline_s
        self._lone_s = math.inf  # seconds of the last call of one text (until one has run: too long to inline)
        self.inline_calls = 0  # calls run on the event loop's thread (tests, metrics)

    @property
    def queue_depth(self) -> int:
        """Texts waiting for a model call."""
        return len(self._queue)

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pretune-model")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="pretune-batcher")

    @contextmanager
    def on_the_way(self):
        """Around reading and tokenizing a request: while any request is on its way, the oldest waiting text waits
        (up to ``max_wait_s``) for its texts to share a model call."""
        self._coming += 1
        try:
            yield
        finally:
            self._coming -= 1
            if self._task is not None:
                self._wakeup.set()  # the loop re-checks whether anyone is still coming

    async def run_in_model_thread(self, fn: Callable, *args):
        """``fn(*args)`` in the model's thread, between batches (loading and warming up the model)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def submit(self, payloads: Sequence, lengths: Sequence[int]) -> list:
        """The rows of ``payloads`` (one per payload, in order), once the batches holding them have run.

        Raises:
            BatcherClosed: the server is shutting down.
            BatcherFull: ``max_queue`` texts wait already.
            Exception: what ``predict`` raised for this request's texts.
        """
        if self._closing or self._task is None:
            raise BatcherClosed("the server is shutting down")
        if self.max_queue is not None and len(self._queue) + len(payloads) > self.max_queue:
            raise BatcherFull(f"the server is busy: {len(self._queue)} texts wait already (--max-queue "
                              f"{self.max_queue}); retry later")
        if not payloads:
            return []
        loop = asyncio.get_running_loop()
        request = _Request(loop.create_future(), [None] * len(payloads), len(payloads))
        now = loop.time()
        self._queue.extend(_Item(request, i, p, n, now) for i, (p, n) in enumerate(zip(payloads, lengths)))
        self._wakeup.set()
        return await request.future  # cancelled with the handler when its client goes away

    async def close(self) -> None:
        """Stop taking texts, run those already waiting (without waiting for company), then stop the thread."""
        self._closing = True
        if self._task is not None:
            self._wakeup.set()
            await self._task
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            deadline = self._queue[0].arrived + self.max_wait_s
            while not self._closing and len(self._queue) < self.max_batch_size and self._coming > 0:
                left = deadline - loop.time()
                if left <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), left)
                except asyncio.TimeoutError:
                    break
            for batch in self._take():
                await self._call(batch)

    def _take(self) -> list[list[_Item]]:
        """The oldest waiting texts (WINDOW batches' worth), live ones only, sorted by length and cut into batches."""
        taken: list[_Item] = []
        while self._queue and len(taken) < WINDOW * self.max_batch_size:
            item = self._queue.popleft()
            if not item.request.future.done():
                taken.append(item)
        taken.sort(key=lambda it: it.length)  # stable: equal lengths keep their arrival order
        return [taken[i:i + self.max_batch_size] for i in range(0, len(taken), self.max_batch_size)]

    async def _call(self, batch: list[_Item]) -> None:
        live = [it for it in batch if not it.request.future.done()]  # a client may have left meanwhile
        if not live:
            return
        loop = asyncio.get_running_loop()
        payloads = [it.payload for it in live]
        lone = len(live) == 1
        t0 = time.perf_counter()
        try:
            if lone and self._lone_s < self.inline_s and not self._queue and self._coming == 0:
                self.inline_calls += 1
                rows = self._predict_checked(payloads)  # on the loop: nobody waits, and the hop would cost more
            else:
                rows = await loop.run_in_executor(self._executor, self._predict_checked, payloads)
        except Exception as e:  # delivered to the requests; the loop goes on
            requests = {id(it.request): it.request for it in live}
            if len(requests) > 1:  # find whose texts fail: one request at a time
                for request in requests.values():
                    await self._call([it for it in live if it.request is request])
                return
            for it in live:
                if not it.request.future.done():
                    it.request.future.set_exception(e)
            return
        finally:
            seconds = time.perf_counter() - t0
            if lone:
                self._lone_s = seconds
            if self.on_batch is not None:
                self.on_batch(len(live), seconds)
        for it, row in zip(live, rows):
            request = it.request
            if request.future.done():  # cancelled while the model ran: its rows are dropped
                continue
            request.results[it.index] = row
            request.remaining -= 1
            if request.remaining == 0:
                request.future.set_result(request.results)

    def _predict_checked(self, payloads: list) -> list:
        rows = self.predict(payloads)
        if len(rows) != len(payloads):
            raise RuntimeError(f"the model gave {len(rows)} rows for {len(payloads)} texts")
        return rows
