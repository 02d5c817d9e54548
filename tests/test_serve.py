"""`rnncli serve` as a client meets it: a real server process on a free loopback port, called with a
real HTTP client (httpx). Every answer is checked against the Python API on the same model."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import one_line_error, run_without

from rnncli import load_model
from rnncli.builtin import generate
from rnncli.predict import BATCH_TOLERANCE

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
ENV.pop("RNNCLI_API_KEY", None)
JSON = {"content-type": "application/json"}


class Server:
    """`rnncli serve ARGS --port 0` in its own process; `url` once it answers /health."""

    def __init__(self, *args, env=None, command=None, timeout=90):
        argv = command or [sys.executable, "-m", "rnncli", "serve", "--port", "0", *args]
        self.proc = subprocess.Popen(argv, env={**ENV, **(env or {})}, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.announced = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()  # the pipe never fills up
        if not self.announced.wait(timeout):
            self.stop(signal.SIGKILL)
            raise AssertionError(f"the server did not start:\n{self.log}")
        try:
            self.url = next(w for line in self.lines for w in line.split() if w.startswith("http://"))
            deadline = time.monotonic() + timeout
            while not self._healthy():
                assert time.monotonic() < deadline and self.proc.poll() is None, self.log
                time.sleep(0.05)
        except BaseException:
            self.stop(signal.SIGKILL)  # a server that never came up is not left behind
            raise

    def _healthy(self) -> bool:
        try:  # with --workers the address is announced before uvicorn binds it again for them
            return httpx.get(f"{self.url}/health", timeout=5).status_code == 200
        except httpx.ConnectError:
            return False

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            if " on http://" in line:
                self.announced.set()
        self.announced.set()

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def stop(self, sig=signal.SIGTERM, timeout=60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


@pytest.fixture(scope="module")
def clf(tiny_model):
    return load_model(tiny_model)


@pytest.fixture(scope="module")
def server(tiny_model):
    s = Server("--model", str(tiny_model), "--max-wait-ms", "5", "--max-texts", "8", "--max-body", "4096")
    yield s
    assert s.stop() == 0, s.log


def assert_same_record(served: dict, expected: dict):
    """A served record is the Python API's, with probabilities equal up to batching (BATCH_TOLERANCE)."""
    assert {k: v for k, v in served.items() if k not in ("score", "probabilities", "top")} == \
           {k: v for k, v in expected.items() if k not in ("score", "probabilities", "top")}
    assert served["probabilities"].keys() == expected["probabilities"].keys()
    for name, p in expected["probabilities"].items():
        assert served["probabilities"][name] == pytest.approx(p, abs=BATCH_TOLERANCE)


TEXTS = ["a gorgeous, witty film", "dull and far too long", "", "the acting is great but the plot is a mess"]


def test_predict_answers_the_records_of_predict_json(server, clf):
    r = httpx.post(f"{server.url}/predict", json={"texts": TEXTS, "top_k": 2})
    assert r.status_code == 200, r.text
    served = r.json()
    assert len(served) == len(TEXTS)
    for record, prediction in zip(served, clf.predict(TEXTS)):
        assert_same_record(record, prediction.to_dict(2))
        assert [name for name, _ in record["top"]] == [name for name, _ in prediction.top(2)]
    assert served[2]["empty"] and served[2]["label"] is None


def test_threshold_answers_as_predict_does(server, clf):
    text = TEXTS[0]
    p = clf.predict([text])[0].probabilities[clf.labels[1]]
    for threshold, label in [(min(p + 0.01, 0.99), clf.labels[0]), (max(p - 0.01, 0.01), clf.labels[1])]:
        r = httpx.post(f"{server.url}/predict", json={"texts": [text], "threshold": threshold})
        assert r.json()[0]["label"] == label == clf.predict([text], threshold=threshold)[0].label


def test_the_hugging_face_shape(server, clf):
    one = httpx.post(f"{server.url}/predict", json={"inputs": TEXTS[0]}).json()
    p = clf.predict([TEXTS[0]])[0]
    assert [d["label"] for d in one] == [name for name, _ in p.top(len(clf.labels))]
    assert one[0]["score"] == pytest.approx(p.score, abs=BATCH_TOLERANCE)
    many = httpx.post(f"{server.url}/predict", json={"inputs": TEXTS[:2], "parameters": {"top_k": 1}}).json()
    assert [[d["label"] for d in ranked] for ranked in many] == [[p.label] for p in clf.predict(TEXTS[:2])]


def test_explain_answers_what_predict_explain_json_prints(server, clf):
    text = TEXTS[3]
    served = httpx.post(f"{server.url}/explain", json={"text": text}).json()
    expected = clf.explain(text).to_dict()
    assert served["tokens"] == expected["tokens"] and served["label"] == expected["label"]
    assert len(served["probabilities"]) == len(expected["probabilities"]) == len(expected["tokens"])
    for row, want in zip(served["probabilities"], expected["probabilities"]):
        assert row == pytest.approx(want, abs=BATCH_TOLERANCE)


def test_info_is_the_model_card_without_the_key(server, clf, tiny_model):
    info = httpx.get(f"{server.url}/info").json()
    assert info["labels"] == clf.labels
    assert info["architecture"]["hidden"] == 13 and info["architecture"]["embed"] == 11
    assert info["parameters"] == sum(p.numel() for p in clf.model.parameters())
    assert info["best"]["accuracy"] == json.loads((tiny_model / "config.json").read_text())["best"]["accuracy"]
    assert [e["epoch"] for e in info["epochs"]] == [1, 2]
    assert info["versions"]["torch"] and info["serving"]["max_texts"] == 8
    assert info["serving"]["api_key_required"] is False and "api_key" not in info["serving"]


def test_health_metrics_and_the_openapi_page(server):
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    httpx.post(f"{server.url}/predict", json={"texts": ["counted"]})
    metrics = httpx.get(f"{server.url}/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in ('rnncli_requests_total{endpoint="/predict",status="200"}', "rnncli_request_seconds_bucket",
                 "rnncli_batch_texts_count", "rnncli_texts_total"):
        assert name in metrics.text
    assert "/predict" in httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert httpx.get(f"{server.url}/docs").status_code == 200
    # only POSTs take the direct way to an endpoint; the app answers every other method and path
    assert httpx.get(f"{server.url}/predict").status_code == 405
    assert httpx.post(f"{server.url}/nowhere", json={}).status_code == 404


def test_500_requests_from_16_threads_each_get_their_own_answer(server, clf):
    texts = [text for text, _ in generate(500, seed=11)]
    before = _batches(server)

    def ask(text):
        with httpx.Client(base_url=server.url, timeout=30) as client:
            return client.post("/predict", json={"texts": [text]}).json()[0]

    with ThreadPoolExecutor(16) as pool:
        served = list(pool.map(ask, texts))
    for record, text in zip(served, texts):
        assert record["text"] == text
        assert_same_record(record, clf.predict([text])[0].to_dict())
    batches, joined = _batches(server)[0] - before[0], _batches(server)[1] - before[1]
    assert joined == 500 and batches < 500  # requests did share forward passes


def _batches(server) -> tuple[float, float]:
    """(forward passes, texts in them) so far, read from /metrics."""
    found = {}
    for line in httpx.get(f"{server.url}/metrics").text.splitlines():
        for key in ("rnncli_batch_texts_count", "rnncli_batch_texts_sum"):
            if line.startswith(key + " "):
                found[key] = float(line.split()[1])
    return found["rnncli_batch_texts_count"], found["rnncli_batch_texts_sum"]


BAD = [  # (body, content type, status, words of the message)
    (b"{bad", "application/json", 400, "not valid JSON"),
    (b'{"texts": ["\xff"]}', "application/json", 400, "not valid JSON: invalid unicode"),  # not UTF-8
    (b"", "application/json", 422, "a JSON body is required"),
    (b"[1, 2]", "application/json", 422, "must be a JSON object"),
    (b'{"texts": ["a"]}', "text/plain", 415, "Content-Type: application/json"),
    (b'{"texts": ["a"]} x', "application/json", 400, "trailing characters"),
    (b'{"texts": []}', "application/json", 422, "empty"),
    (b'{"texts": "one"}', "application/json", 422, "texts: Input should be a valid array"),
    (b'{"texts": [1]}', "application/json", 422, "texts.0: Input should be a valid string"),
    (b'{"texts": [null]}', "application/json", 422, "texts.0"),
    (b'{"texts": ["\\ud800"]}', "application/json", 400, "not valid JSON"),  # a lone surrogate
    (b'{"texts": ["\\udc00 x"]}', "application/json", 400, "not valid JSON"),
    (b'{"texts": ["a"], "threshold": NaN}', "application/json", 422, "finite"),
    (b'{"texts": ["a"], "threshold": 1.5}', "application/json", 422, "threshold"),
    (b'{"texts": ["a"], "top_k": 0}', "application/json", 422, "top_k"),
    (b'{"texts": ["a"], "top_k": true}', "application/json", 422, "top_k"),
    (b'{"texts": ["a"], "what": 1}', "application/json", 422, "what: Extra inputs are not permitted"),
    (b'{"texts": ["a"], "inputs": "b"}', "application/json", 422, "one of them"),
    (b'{"texts": ["a","b","c","d","e","f","g","h","i"]}', "application/json", 422, "at most 8 (--max-texts)"),
    (b'{"texts": ["' + b"a" * 5000 + b'"]}', "application/json", 413, ""),
]


@pytest.mark.parametrize("body, kind, status, words", BAD, ids=[f"{s}-{w or 'too large'}" for _, _, s, w in BAD])
def test_a_bad_request_is_a_one_line_4xx_and_the_next_one_works(server, body, kind, status, words):
    r = httpx.post(f"{server.url}/predict", content=body, headers={"content-type": kind})
    assert r.status_code == status, r.text
    detail = r.json()["detail"] if r.headers["content-type"].startswith("application/json") else r.text
    assert words in detail and "\n" not in detail
    assert httpx.post(f"{server.url}/predict", json={"texts": ["still fine"]}).status_code == 200


def test_a_body_streamed_past_the_limit_is_refused(server):
    def chunks():
        for _ in range(10):
            yield b"x" * 1000  # 10,000 bytes with no Content-Length, over --max-body 4096

    r = httpx.post(f"{server.url}/predict", content=chunks(), headers=JSON)
    assert r.status_code == 413
    assert httpx.post(f"{server.url}/predict", json={"texts": ["still fine"]}).status_code == 200


def test_explain_refuses_what_it_cannot_read(server):
    for body, words in [({"text": ""}, "empty"), ({"text": 5}, "valid string"), ({}, "Field required")]:
        r = httpx.post(f"{server.url}/explain", json=body)
        assert r.status_code == 422 and words in r.json()["detail"]


def test_a_foreign_host_header_is_refused_and_no_cors_headers_are_sent(server):
    r = httpx.post(f"{server.url}/predict", json={"texts": ["a"]}, headers={"host": "evil.example"})
    assert r.status_code == 400  # DNS rebinding: a page at evil.example resolving to 127.0.0.1
    r = httpx.post(f"{server.url}/predict", json={"texts": ["a"]}, headers={"origin": "http://evil.example"})
    assert r.status_code == 200 and not any(h.startswith("access-control-") for h in r.headers)


def test_the_api_key_guards_everything_but_health_and_never_shows(tiny_model):
    key = "s3cret-key-4711"
    s = Server("--model", str(tiny_model), env={"RNNCLI_API_KEY": key})
    try:
        assert httpx.get(f"{s.url}/health").status_code == 200
        for path in ("/info", "/metrics", "/docs", "/openapi.json"):
            assert httpx.get(f"{s.url}{path}").status_code == 401
        for auth in (None, "Bearer wrong", f"Bearer {key}x", key, f"Basic {key}"):
            r = httpx.post(f"{s.url}/predict", json={"texts": ["a"]}, headers={"authorization": auth} if auth else {})
            assert r.status_code == 401 and key not in r.text and r.headers["www-authenticate"] == "Bearer"
        good = {"authorization": f"Bearer {key}"}
        assert httpx.post(f"{s.url}/predict", json={"texts": ["a"]}, headers=good).status_code == 200
        info = httpx.get(f"{s.url}/info", headers=good)
        assert info.json()["serving"]["api_key_required"] is True and key not in info.text
        assert key not in httpx.get(f"{s.url}/metrics", headers=good).text
    finally:
        assert s.stop() == 0
    assert key not in s.log


def test_sigterm_under_load_answers_every_request_in_flight_and_exits_0(tiny_model, clf):
    s = Server("--model", str(tiny_model))
    texts = [text for text, _ in generate(64, seed=3)]
    expected = [p.label for p in clf.predict(texts)]
    outcomes, stop = [], threading.Event()

    def load():
        with httpx.Client(base_url=s.url, timeout=30) as client:
            while not stop.is_set():
                start = time.monotonic()
                try:
                    labels = [r["label"] for r in client.post("/predict", json={"texts": texts}).json()]
                    outcomes.append((start, time.monotonic(), labels == expected))
                except httpx.TransportError:  # after the stop: refused, or closed while idle
                    outcomes.append((start, time.monotonic(), None))
                    return

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    signalled = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    stop.set()
    for t in threads:
        t.join(60)
    assert s.proc.wait(60) == 0, s.log
    sent_before = [ok for start, _, ok in outcomes if start < signalled - 0.05]
    in_flight = [ok for start, end, ok in outcomes if start < signalled - 0.05 < end]
    assert sent_before and all(ok is True for ok in sent_before), outcomes
    assert in_flight, "no request was in flight when the signal came"


def test_a_request_that_breaks_the_model_is_a_500_for_it_alone(tiny_model):
    script = f"""
import sys
from rnncli.predict import Classifier
from rnncli.serve import ServeOptions
from rnncli.serve.app import create_app
from rnncli.serve.server import address, listen, run

class Broken(Classifier):
    def predict(self, texts, **kw):
        if "boom" in texts:
            raise RuntimeError("a bug met boom")
        return super().predict(texts, **kw)

options = ServeOptions(model={str(tiny_model)!r}, port=0, max_wait_ms=50)
sock = listen(options)
print("serving on", address(sock), flush=True)
run(options, sock, create_app(Broken.load(options.model), options))
"""
    s = Server(command=[sys.executable, "-c", script])
    try:
        with ThreadPoolExecutor(6) as pool:  # sent together: one forward pass, which fails, then each alone
            answers = list(pool.map(lambda t: httpx.post(f"{s.url}/predict", json={"texts": [t]}),
                                    ["fine", "boom", "good", "fine too", "ok", "great"]))
        assert [r.status_code for r in answers] == [200, 500, 200, 200, 200, 200]
        assert "internal error" in answers[1].json()["detail"]
        assert httpx.post(f"{s.url}/predict", json={"texts": ["after"]}).status_code == 200
    finally:
        assert s.stop() == 0
    assert "a bug met boom" in s.log  # the traceback is ours to read, in the server's log


def test_max_batch_one_runs_every_request_alone(tiny_model):
    s = Server("--model", str(tiny_model), "--max-batch", "1", "--max-wait-ms", "20")
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda t: httpx.post(f"{s.url}/predict", json={"texts": [t]}), ["x"] * 40))
        assert _batches(s) == (40, 40)
    finally:
        assert s.stop() == 0


def run_serve(*args, env=None):
    return subprocess.run([sys.executable, "-m", "rnncli", "serve", *args], env={**ENV, **(env or {})},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False)


def one_line(p) -> str:
    """The single stderr line of a refused `serve`, which never got as far as saying where it serves."""
    line = one_line_error(p)
    assert "serving" not in p.stderr, p.stderr
    return line


def test_a_broken_model_folder_is_refused_before_any_port_opens(tiny_model_copy, tmp_path):
    assert "no model here" in one_line(run_serve("--model", str(tmp_path / "none")))
    (tiny_model_copy / "config.json").write_text("{not json")
    assert "not valid JSON" in one_line(run_serve("--model", str(tiny_model_copy)))


@pytest.mark.parametrize("args, words", [
    (["--port", "70000"], "--port"), (["--max-batch", "0"], "--max-batch"),
    (["--max-wait-ms", "nan"], "--max-wait-ms must be a finite number"), (["--max-body", "0"], "--max-body"),
    (["--workers", "0"], "--workers"), (["--api-key", " "], "API key"),
])
def test_bad_options_are_one_line(tiny_model, args, words):
    assert words in one_line(run_serve("--model", str(tiny_model), *args))


def test_a_port_in_use_is_one_line(tiny_model, server):
    port = server.url.rsplit(":", 1)[1]
    assert f"cannot listen on 127.0.0.1:{port}" in one_line(run_serve("--model", str(tiny_model), "--port", port))


def test_without_the_extra_the_error_names_it(tiny_model):
    p = run_without("fastapi", ["serve", "--model", str(tiny_model)])
    assert 'pip install "rnncli[serve]"' in one_line(p)


@pytest.mark.slow
def test_workers_serve_and_stop_on_sigterm(tiny_model, clf):
    s = Server("--model", str(tiny_model), "--workers", "2")
    try:
        for text in TEXTS[:2]:
            assert httpx.post(f"{s.url}/predict", json={"texts": [text]}).json()[0]["label"] == \
                   clf.predict([text])[0].label
    finally:
        assert s.stop() == 0, s.log


def test_a_folder_with_model_onnx_is_served_by_onnxruntime(tiny_model_copy, clf):
    """auto: predictions from model.onnx, /explain from the weights (only torch reads every step)."""
    pytest.importorskip("onnxruntime")
    from rnncli.export import TOLERANCE, export

    export(tiny_model_copy)
    s = Server("--model", str(tiny_model_copy))
    try:
        assert "(onnx (fp32)) on http://" in s.log
        assert httpx.get(f"{s.url}/info").json()["runtime"] == "onnx (fp32)"
        served = httpx.post(f"{s.url}/predict", json={"texts": TEXTS}).json()
        for record, prediction in zip(served, clf.predict(TEXTS), strict=True):
            assert record["label"] == prediction.label
            for name, p in prediction.probabilities.items():
                assert record["probabilities"][name] == pytest.approx(p, abs=TOLERANCE["none"])
        r = httpx.post(f"{s.url}/explain", json={"text": TEXTS[0]})
        assert r.status_code == 200 and r.json() == clf.explain(TEXTS[0]).to_dict()
    finally:
        assert s.stop() == 0, s.log
    s = Server("--model", str(tiny_model_copy), "--runtime", "onnx")
    try:
        r = httpx.post(f"{s.url}/explain", json={"text": TEXTS[0]})
        assert r.status_code == 422 and "use --runtime torch" in r.json()["detail"]
        assert httpx.post(f"{s.url}/predict", json={"texts": TEXTS[:1]}).status_code == 200
    finally:
        assert s.stop() == 0, s.log
