"""Micro-batching for the server: the texts of requests that arrive together share one forward pass.

A request hands its texts to `MicroBatcher.submit` and awaits its own results. One task gathers
the waiting requests, and for up to `max_wait` seconds those still on their way in (`arriving`:
their bodies being read), until `max_batch` texts; it runs them through `run` and hands each
request the slice of results that belongs to it, in order. A lone request waits for nobody; under
load, requests gather while a pass runs. With `max_batch=1` every request runs alone.

Where a pass runs: one worker thread takes the passes that would hold the event loop up (off the
loop, so that it keeps reading requests), while a pass expected to take under `INLINE_SECONDS`
runs on the event loop itself. torch lets the interpreter lock go at every operation, and a
second thread that wants it back waits each time for the loop to let go: serving single texts
from 32 clients, those small passes cost the worker thread 2-3 times the CPU they take alone,
and running them on the loop answers about a fifth more requests a second. The expected time is
the texts' characters times the seconds per character of the recent passes on the loop (a pass on
the thread, slowed by its waits, can only lower it); until one pass has been timed, every pass goes
to the thread. Passes never overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

INLINE_SECONDS = 0.002  # a pass expected to take less runs on the event loop (see above)


@dataclass
class Pending:
    texts: list[str]
    answer: asyncio.Future = field(repr=False)


class MicroBatcher:
    def __init__(self, run: Callable[[list[str]], list], max_batch: int, max_wait: float,
                 observe: Callable[[int], None] | None = None):
        self.run = run  # texts -> one result per text, in order
        self.max_batch = max_batch
        self.max_wait = max_wait  # seconds
        self.observe = observe or (lambda texts: None)  # called with each forward pass's text count
        self.queue: asyncio.Queue[Pending] | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.task: asyncio.Task | None = None
        self.coming = 0  # requests inside `arriving`, not yet submitted
        self.per_char: float | None = None  # seconds a pass takes per character of its texts, lately
        self.in_thread = 0  # calls on the worker thread not yet returned

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rnncli-inference")
        self.task = asyncio.create_task(self._serve())

    async def stop(self) -> None:
        """Stop gathering; the pass in progress, if any, finishes first."""
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.pool.shutdown(wait=True)

    @contextlib.contextmanager
    def arriving(self):
        """Around a request's way to `submit` (reading and checking its body): a pass that is
        gathering waits for it, up to `max_wait`."""
        self.coming += 1
        try:
            yield
        finally:
            self.coming -= 1

    def enqueue(self, texts: list[str]) -> asyncio.Future:
        """A future of the results for `texts`, computed with whatever other requests are waiting."""
        pending = Pending(list(texts), asyncio.get_running_loop().create_future())
        self.queue.put_nowait(pending)
        return pending.answer

    async def submit(self, texts: list[str]) -> list:
        return await self.enqueue(texts)

    async def call(self, fn: Callable, *args):
        """`fn(*args)` on the inference thread, in turn with the forward passes (for /explain)."""
        self.in_thread += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        finally:
            self.in_thread -= 1

    async def _pass(self, texts: list[str]) -> list:
        """`run(texts)`, on the event loop when it is expected to be short and nothing runs on the
        thread, else on the thread; its time per character updates the expectation."""
        chars = max(1, sum(map(len, texts)))
        if self.per_char is not None and not self.in_thread and chars * self.per_char < INLINE_SECONDS:
            results, seconds = _timed(self.run, texts)
            self.per_char = 0.8 * self.per_char + 0.2 * seconds / chars
        else:
            results, seconds = await self.call(_timed, self.run, texts)
            # the thread's time includes its waits for the loop, so it can only lower the estimate
            self.per_char = min(self.per_char or float("inf"), seconds / chars)
        return results

    async def _serve(self) -> None:
        while True:
            batch = await self._gather()
            await self._answer(batch)

    async def _gather(self) -> list[Pending]:
        """The waiting requests, and those arriving that join them within `max_wait`, up to
        `max_batch` texts."""
        loop = asyncio.get_running_loop()
        batch = [await self.queue.get()]
        count = len(batch[0].texts)
        deadline = loop.time() + self.max_wait
        while count < self.max_batch:
            if self.queue.empty():
                left = deadline - loop.time()
                if left <= 0 or not self.coming:  # nobody else is on the way in
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:  # TimeoutError itself from Python 3.11
                    break
            else:
                batch.append(self.queue.get_nowait())
            count += len(batch[-1].texts)
        return batch

    async def _answer(self, batch: list[Pending]) -> None:
        """One forward pass for the whole batch. If it fails, each request is run alone, so a text
        that breaks the model fails its own request only."""
        texts = [text for pending in batch for text in pending.texts]
        try:
            results = await self._pass(texts)
            self.observe(len(texts))
        except Exception as e:  # noqa: BLE001 - whatever breaks a pass goes to its requests, not the loop
            if len(batch) == 1:
                _settle(batch[0], error=e)
                return
            for pending in batch:
                await self._answer([pending])
            return
        start = 0
        for pending in batch:
            _settle(pending, results[start:start + len(pending.texts)])
            start += len(pending.texts)


def _timed(fn: Callable, texts: list[str]) -> tuple[list, float]:
    start = time.perf_counter()
    return fn(texts), time.perf_counter() - start


def _settle(pending: Pending, results: list | None = None, error: Exception | None = None) -> None:
    if pending.answer.done():  # the client went away and its request was cancelled
        return
    if error is not None:
        pending.answer.set_exception(error)
    else:
        pending.answer.set_result(results)
