"""Micro-batching for the server: the texts of requests that arrive together share one forward pass.

A request hands its texts to `MicroBatcher.submit` and awaits its own results. One task gathers
requests for up to `max_wait` seconds or until `max_batch` texts are waiting, runs them through
`run` on one worker thread (off the event loop, so torch calls never overlap), and hands each
request the slice of results that belongs to it, in order. With `max_batch=1` every request runs
alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field


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

    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rnncli-inference")
        self.task = asyncio.create_task(self._serve())

    async def stop(self) -> None:
        """Stop gathering; the pass in progress, if any, finishes first."""
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.pool.shutdown(wait=True)

    async def submit(self, texts: list[str]) -> list:
        """The results for `texts`, computed with whatever other requests are waiting."""
        pending = Pending(list(texts), asyncio.get_running_loop().create_future())
        self.queue.put_nowait(pending)
        return await pending.answer

    async def call(self, fn: Callable, *args):
        """`fn(*args)` on the inference thread, in turn with the forward passes (for /explain)."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def _serve(self) -> None:
        while True:
            batch = await self._gather()
            await self._answer(batch)

    async def _gather(self) -> list[Pending]:
        """The first waiting request and those that join it within `max_wait`, up to `max_batch` texts."""
        loop = asyncio.get_running_loop()
        batch = [await self.queue.get()]
        count = len(batch[0].texts)
        deadline = loop.time() + self.max_wait
        while count < self.max_batch:
            if self.queue.empty():
                left = deadline - loop.time()
                if left <= 0:
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
            results = await self.call(self.run, texts)
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


def _settle(pending: Pending, results: list | None = None, error: Exception | None = None) -> None:
    if pending.answer.done():  # the client went away and its request was cancelled
        return
    if error is not None:
        pending.answer.set_exception(error)
    else:
        pending.answer.set_result(results)
