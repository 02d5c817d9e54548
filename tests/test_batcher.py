"""Micro-batching, on its own: requests that arrive together share one call, and each gets exactly
its own results back, in order; a failing call fails only the request that caused it."""

import asyncio
import time

from rnncli.serve.batcher import MicroBatcher


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
