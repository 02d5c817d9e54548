"""Micro-batching, on its own: requests that arrive together share one call, and each gets exactly
its own results back, in order; a failing call fails only the request that caused it."""

import asyncio

import pytest

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


@pytest.mark.parametrize("max_wait", [0.0, 0.002])
def test_a_lone_request_is_answered_without_company(max_wait):
    assert serve(Recorder(), [["solo"]], max_batch=64, max_wait=max_wait) == [["SOLO"]]
