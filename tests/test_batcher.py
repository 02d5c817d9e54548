"""Micro-batching, on its own: requests that arrive together share one call, and each gets exactly
its own results back, in order; a failing call fails only the request that caused it; a short pass
runs on the event loop, a long one on the worker thread, and passes never overlap."""

import asyncio
import threading
import time

from rnncli.serve.batcher import INLINE_SECONDS, MicroBatcher


class Recorder:
    """A stand-in forward pass: answers each text with its upper-case form and records every call."""

    def __init__(self, fail_on: str | None = None):
        self.calls: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, texts: list[str]) -> list[str]:
        self.calls.append(list(texts))
        if self.fail_on in texts:
            raise RuntimeError(f"cannot read {self.fail_on!r}")
        return [text.upper() for text in texts]


def serve(run, requests, **kw):
    """Submit every request at once and return each one's answer (or its exception)."""

    async def main():
        batcher = MicroBatcher(run, **kw)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(texts) for texts in requests), return_exceptions=True)
        finally:
            await batcher.stop()

    return asyncio.run(main())


REQUESTS = [["a", "b"], ["c"], ["d", "e", "f"], ["g"], ["h", "i"]]


def test_requests_arriving_together_share_one_pass_and_get_their_own_results():
    run = Recorder()
    answers = serve(run, REQUESTS, max_batch=64, max_wait=0.05)
    assert answers == [[t.upper() for t in texts] for texts in REQUESTS]
    assert run.calls == [[t for texts in REQUESTS for t in texts]]


def test_a_pass_stops_gathering_at_max_batch_texts():
    run = Recorder()
    answers = serve(run, REQUESTS, max_batch=3, max_wait=0.05)
    assert answers == [[t.upper() for t in texts] for texts in REQUESTS]
    assert run.calls == [["a", "b", "c"], ["d", "e", "f"], ["g", "h", "i"]]


def test_max_batch_one_runs_every_request_alone():
    run = Recorder()
    serve(run, REQUESTS, max_batch=1, max_wait=0.05)
    assert run.calls == REQUESTS


def test_a_request_that_breaks_the_pass_fails_alone():
    run = Recorder(fail_on="d")
    answers = serve(run, REQUESTS, max_batch=64, max_wait=0.05)
    assert isinstance(answers[2], RuntimeError)
    assert [a for i, a in enumerate(answers) if i != 2] == [[t.upper() for t in texts]
                                                           for i, texts in enumerate(REQUESTS) if i != 2]


def test_a_cancelled_request_leaves_the_others_answered():
    async def main():
        batcher = MicroBatcher(Recorder(), max_batch=64, max_wait=0.05)
        await batcher.start()
        gone = asyncio.ensure_future(batcher.submit(["x"]))
        kept = asyncio.ensure_future(batcher.submit(["y"]))
        await asyncio.sleep(0)
        gone.cancel()
        answer = await kept
        await batcher.stop()
        return answer

    assert asyncio.run(main()) == ["Y"]


def test_a_lone_request_waits_for_nobody():
    async def main():
        batcher = MicroBatcher(Recorder(), max_batch=64, max_wait=5.0)
        await batcher.start()
        start = time.monotonic()
        answer = await batcher.submit(["solo"])
        waited = time.monotonic() - start
        await batcher.stop()
        return answer, waited

    answer, waited = asyncio.run(main())
    assert answer == ["SOLO"] and waited < 1.0  # not the 5 s a request may wait for company


def test_a_pass_waits_for_a_request_on_its_way_in():
    run = Recorder()

    async def late(batcher):
        with batcher.arriving():  # its body is being read
            await asyncio.sleep(0.05)
            answer = batcher.enqueue(["late"])
        return await answer

    async def main():
        batcher = MicroBatcher(run, max_batch=64, max_wait=5.0)
        await batcher.start()
        coming = asyncio.ensure_future(late(batcher))
        await asyncio.sleep(0)  # `late` is inside `arriving` now
        answers = await asyncio.gather(batcher.submit(["early"]), coming)
        await batcher.stop()
        return answers

    assert asyncio.run(main()) == [["EARLY"], ["LATE"]]
    assert run.calls == [["early", "late"]]


def test_the_wait_for_a_request_that_never_comes_ends_at_max_wait():
    async def main():
        batcher = MicroBatcher(Recorder(), max_batch=64, max_wait=0.2)
        await batcher.start()
        with batcher.arriving():  # a request whose body never turns out valid
            start = time.monotonic()
            answer = await batcher.submit(["alone"])
            waited = time.monotonic() - start
        await batcher.stop()
        return answer, waited

    answer, waited = asyncio.run(main())
    assert answer == ["ALONE"] and 0.15 < waited < 2.0


class Where(Recorder):
    """A Recorder that also notes which thread ran each pass, and takes `seconds` a pass."""

    def __init__(self, seconds: float = 0.0):
        super().__init__()
        self.seconds = seconds
        self.threads: list[int] = []

    def __call__(self, texts):
        self.threads.append(threading.get_ident())
        time.sleep(self.seconds)
        return super().__call__(texts)


def one_at_a_time(run, requests):
    """Each request submitted after the last is answered; returns the event loop's thread."""

    async def main():
        batcher = MicroBatcher(run, max_batch=64, max_wait=0.05)
        await batcher.start()
        for texts in requests:
            assert await batcher.submit(texts) == [t.upper() for t in texts]
        await batcher.stop()
        return threading.get_ident()

    return asyncio.run(main())


def test_a_short_pass_runs_on_the_event_loop_once_one_has_been_timed():
    run = Where()
    loop_thread = one_at_a_time(run, REQUESTS)
    assert run.threads[0] != loop_thread  # nothing timed yet: the worker thread
    assert run.threads[1:] == [loop_thread] * (len(REQUESTS) - 1)


def test_a_long_pass_stays_off_the_event_loop():
    run = Where(seconds=10 * INLINE_SECONDS)
    loop_thread = one_at_a_time(run, REQUESTS)
    assert loop_thread not in run.threads


def test_a_pass_waits_for_a_call_on_the_thread_and_never_overlaps_it():
    run, release, events = Where(), threading.Event(), []

    def explain():  # a long /explain on the worker thread
        release.wait(5)
        events.append("explained")
        return "explanation"

    async def main():
        batcher = MicroBatcher(run, max_batch=64, max_wait=0.05)
        await batcher.start()
        await batcher.submit(["timed"])  # now a short pass could run on the loop
        explaining = asyncio.ensure_future(batcher.call(explain))
        await asyncio.sleep(0.01)
        answer = asyncio.ensure_future(batcher.submit(["x"]))
        await asyncio.sleep(0.05)
        events.append(f"answered: {answer.done()}")
        release.set()
        results = await asyncio.gather(explaining, answer)
        await batcher.stop()
        return results

    assert asyncio.run(main()) == ["explanation", ["X"]]
    assert events == ["answered: False", "explained"]
