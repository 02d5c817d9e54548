#!/usr/bin/env python3
"""`rnncli serve` under load, against the HTTP stack's own ceiling, measured in one run.

    python bench/serve.py [--data ../shared/data] [--seconds 3] [--rounds 3] [--max-requests 20000]
                          [--soak 60] [--models DIR] [--write-docs]

Trains (or reuses, under --models) two SST-2 models: the default one, and one of the
configs/sst2-gru.toml architecture (bidirectional GRU, attention; one epoch, no vectors: the speed is
the architecture's). Each server runs as its own process on a free loopback port; the load generator
here keeps C keep-alive connections busy (C clients, each sending its next request when the last is
answered) for --seconds or --max-requests, whichever comes first, and never sends anywhere but
127.0.0.1. Every answer is checked against the Python API's answer for its own text: a wrong,
missing or mixed-up answer counts as an error. Every row runs --rounds times, the rows in turns, and
the table shows medians (ratios: the median of the rounds' ratios). Rows:
- the ceiling: a FastAPI endpoint that returns a constant, served the same way (uvicorn, one process);
- single-text /predict at 1, 8, 32 and 128 clients, micro-batching on (the default) and --max-batch 1;
- the GRU model at 32 clients, both ways;
- requests of 64 texts at 4 and 16 clients, against `rnncli eval`'s sentences/s on the same SST-2
  validation texts (its figure times the forward pass alone) and the Python API's on 64-text calls;
- the default model served by `--runtime onnx` (a copy of its folder with `rnncli export`'s
  model.onnx) at 32 clients and with 64-text requests, against `rnncli eval --runtime onnx`
  (printed as checks of their own after the targets, which are the torch-served default model's);
  the eval and Python API baselines are measured in every round, after its rows;
- `rnncli predict TEXT` run once per text (the per-call baseline);
- a --soak seconds run at 32 clients: errors, and the server's RSS growth.
`--write-docs` also writes the table into its section of docs/results.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sst2 import model, validation_texts  # bench/sst2.py

import docs  # bench/docs.py, beside this script

PY = sys.executable
RNNCLI = [PY, "-m", "rnncli"]
ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # the load generator sends nowhere else
CEILING = """
import sys
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from rnncli.serve import ServeOptions
from rnncli.serve.server import address, listen, run

app = FastAPI()
ANSWER = [{"label": "positive", "score": 0.9}]

@app.post("/predict")
async def predict():
    return JSONResponse(ANSWER)

@app.get("/health")
async def health():
    return {"status": "ok"}

options = ServeOptions(port=0)
sock = listen(options)
print("serving the constant on", address(sock), file=sys.stderr, flush=True)
run(options, sock, app)
"""


# --- the server processes ------------------------------------------------------------------------

class Server:
    def __init__(self, argv: list[str]):
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        for line in self.proc.stderr:
            if " on http://" in line:
                self.port = int(line.split("http://")[1].split()[0].rsplit(":", 1)[1])
                break
        else:
            sys.exit(f"the server did not start: {' '.join(argv)}")
        self.drain = subprocess.Popen(["cat"], stdin=self.proc.stderr, stdout=subprocess.DEVNULL)
        asyncio.run(wait_healthy(self.port))

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as status:
            return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS"))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)
        self.drain.wait(10)


def serve(model: Path, *flags: str) -> Server:
    return Server([*RNNCLI, "serve", "--model", str(model), "--port", "0", *flags])


async def wait_healthy(port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(f"GET /health HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            status, _ = await read_response(reader)
            writer.close()
            if status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"no answer on port {port}")
        await asyncio.sleep(0.1)


# --- the load generator --------------------------------------------------------------------------

def request_bytes(port: int, body: dict) -> bytes:
    data = json.dumps(body).encode()
    head = (f"POST /predict HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n")
    return head.encode() + data


async def read_response(reader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(int(line.split(":", 1)[1]) for line in lines[1:] if line.lower().startswith("content-length:"))
    return status, await reader.readexactly(length)


async def client(port, work, deadline, budget, latencies, errors):
    """One keep-alive connection sending `work`'s requests in turn; each answer is checked."""
    reader, writer = await asyncio.open_connection(HOST, port)
    i = 0
    try:
        while time.perf_counter() < deadline and budget[0] > 0:
            budget[0] -= 1
            request, check = work[i % len(work)]
            i += 1
            start = time.perf_counter()
            writer.write(request)
            try:
                status, body = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError):
                errors.append("connection lost")
                return
            latencies.append(time.perf_counter() - start)
            if status != 200 or not check(body):
                errors.append(f"{status}: {body[:200]!r}")
    finally:
        writer.close()


def load(port: int, work: list, clients: int, seconds: float, max_requests: int, texts_per_request: int = 1):
    """Requests/s, texts/s, latency percentiles (ms) and errors of `clients` busy connections."""
    latencies, errors, budget = [], [], [max_requests]

    async def main():
        deadline = time.perf_counter() + seconds
        offset = len(work) // max(clients, 1)
        await asyncio.gather(*(client(port, work[c * offset:] + work[:c * offset], deadline, budget,
                                      latencies, errors) for c in range(clients)))

    start = time.perf_counter()
    asyncio.run(main())
    wall = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [0.0] * 99
    return {"requests_per_second": len(latencies) / wall, "texts_per_second": len(latencies) * texts_per_request / wall,
            "p50_ms": q[49] * 1000, "p95_ms": q[94] * 1000, "p99_ms": q[98] * 1000,
            "requests": len(latencies), "errors": len(errors), "first_error": errors[0] if errors else ""}


# --- what the answers must be --------------------------------------------------------------------

def single_text_work(port: int, clf, texts: list[str]) -> list:
    """One request per text, each checked against the Python API's label and probabilities."""
    from rnncli.predict import BATCH_TOLERANCE

    work = []
    for text, p in zip(texts, clf.predict(texts)):
        def check(body, text=text, p=p):
            record = json.loads(body)[0]
            return record["text"] == text and record["label"] == p.label and all(
                abs(record["probabilities"][k] - v) <= BATCH_TOLERANCE for k, v in p.probabilities.items())
        work.append((request_bytes(port, {"texts": [text]}), check))
    return work


def batch_work(port: int, clf, texts: list[str], size: int) -> list:
    work = []
    for start in range(0, len(texts) - size + 1, size):
        chunk = texts[start:start + size]
        labels = [p.label for p in clf.predict(chunk)]
        work.append((request_bytes(port, {"texts": chunk}),
                     lambda body, labels=labels: [r["label"] for r in json.loads(body)] == labels))
    return work


# --- the models and the baselines ----------------------------------------------------------------

def eval_speed(folder: Path, sst2: Path, runtime: str = "torch") -> float:
    """`rnncli eval`'s sentences/s on SST-2 validation."""
    argv = [*RNNCLI, "eval", "--model", str(folder), "--dataset", str(sst2), "--runtime", runtime, "--json"]
    return json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout)["examples_per_second"]


def exported(source: Path, tmp: Path) -> Path:
    """A copy of the model folder with its model.onnx (`rnncli export` writes into the folder)."""
    import shutil

    out = tmp / f"{source.name}-onnx"
    shutil.copytree(source, out)
    subprocess.run([*RNNCLI, "export", "--model", str(out)], check=True, stdout=subprocess.DEVNULL)
    return out


def predict_per_call(folder: Path, texts: list[str]) -> float:
    """Texts/s of `rnncli predict TEXT` run once per text (a new process each time)."""
    start = time.perf_counter()
    for text in texts:
        subprocess.run([*RNNCLI, "predict", "--model", str(folder), text], check=True, capture_output=True)
    return len(texts) / (time.perf_counter() - start)


# --- the run -------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--seconds", type=float, default=3.0, help="longest measurement per row and round")
    ap.add_argument("--max-requests", type=int, default=20000, help="most requests per row and round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every row, in turns (the table: medians)")
    ap.add_argument("--clients", default="1,8,32,128", help="concurrent clients for the single-text rows")
    ap.add_argument("--soak", type=float, default=60.0, help="seconds of the 32-client soak (0: none)")
    ap.add_argument("--calls", type=int, default=5, help="texts for the `rnncli predict` per-call baseline")
    ap.add_argument("--models", type=Path, help="keep the trained models here (and reuse them)")
    docs.add_option(ap)
    a = ap.parse_args()
    sst2 = a.data / "sst2"
    with tempfile.TemporaryDirectory() as tmp:
        models = a.models or Path(tmp)
        default = model(models, "sst2-default", sst2)
        gru = model(models, "sst2-gru", sst2, "--config", str(ROOT / "configs" / "sst2-gru.toml"))
        lines = measure(a, default, gru, exported(default, Path(tmp)), validation_texts(sst2))
    print("\n".join(lines))
    if a.write_docs:
        docs.write_section("bench/serve.py", "\n".join(lines))


ROWS = [  # (key, what the row measures, server, clients (None: each --clients value), texts per request)
    ("ceiling", "constant answer (the ceiling)", "ceiling", None, 1),
    ("batched", "/predict, micro-batching", "batched", None, 1),
    ("alone", "/predict, --max-batch 1", "alone", None, 1),
    ("gru batched", "sst2-gru /predict, micro-batching", "gru batched", (32,), 1),
    ("gru alone", "sst2-gru /predict, --max-batch 1", "gru alone", (32,), 1),
    ("64", "/predict, 64 texts per request", "batched", (4, 16), 64),
    ("onnx batched", "/predict, --runtime onnx, micro-batching", "onnx batched", (32,), 1),
    ("onnx 64", "/predict, --runtime onnx, 64 texts per request", "onnx batched", (4, 16), 64),
]


def measure(a, default: Path, gru: Path, onnx: Path, texts: list[str]) -> list[str]:
    from rnncli import load_model

    clf, gru_clf, onnx_clf = load_model(default), load_model(gru), load_model(onnx, runtime="onnx")
    torch_ = ("--runtime", "torch")
    servers = {"ceiling": Server([PY, "-c", CEILING]), "batched": serve(default, *torch_),
               "alone": serve(default, *torch_, "--max-batch", "1"), "gru batched": serve(gru, *torch_),
               "gru alone": serve(gru, *torch_, "--max-batch", "1"),
               "onnx batched": serve(onnx, "--runtime", "onnx")}
    rss = {name: [s.rss_mb()] for name, s in servers.items()}
    work = {"ceiling": [(request_bytes(servers["ceiling"].port, {"texts": ["x"]}), lambda body: b"positive" in body)]}
    for name in ("batched", "alone", "gru batched", "gru alone"):
        work[name] = single_text_work(servers[name].port, gru_clf if name.startswith("gru") else clf, texts)
    work["64"] = batch_work(servers["batched"].port, clf, texts, 64)
    work["onnx batched"] = single_text_work(servers["onnx batched"].port, onnx_clf, texts)
    work["onnx 64"] = batch_work(servers["onnx batched"].port, onnx_clf, texts, 64)
    runs: dict[tuple[str, int], list[dict]] = {}
    baselines: dict[str, list[float]] = {"eval": [], "api": [], "onnx eval": [], "onnx api": []}
    sst2 = a.data / "sst2"
    for _ in range(a.rounds):  # in turns: a slow spell of a shared machine hits every row alike
        for key, _, server, clients, per_request in ROWS:
            for c in clients or [int(c) for c in a.clients.split(",")]:
                runs.setdefault((key, c), []).append(load(servers[server].port, work[key], c, a.seconds,
                                                           a.max_requests, per_request))
        for name, measured in (("eval", lambda: eval_speed(default, sst2)), ("api", lambda: api_speed(clf, texts, 64)),
                               ("onnx eval", lambda: eval_speed(onnx, sst2, "onnx")),
                               ("onnx api", lambda: api_speed(onnx_clf, texts, 64))):
            baselines[name].append(measured())  # the baselines in the same rounds as the rows
    for name, server in servers.items():
        rss[name].append(server.rss_mb())
    soak = None
    if a.soak > 0:
        before = servers["batched"].rss_mb()
        soak = load(servers["batched"].port, work["batched"], 32, a.soak, 10**9)
        soak["rss"] = (before, servers["batched"].rss_mb())
    for s in servers.values():
        s.stop()
    per_call = predict_per_call(default, texts[:a.calls])
    return report(a, runs, rss, soak, baselines, per_call)


def api_speed(clf, texts: list[str], size: int) -> float:
    """Texts/s of `Classifier.predict` on chunks of `size` texts in this process: tokenizing and the
    forward pass, as a served request does them, without the HTTP around them."""
    chunks = [texts[i:i + size] for i in range(0, len(texts) - size + 1, size)]
    clf.predict(chunks[0])
    start = time.perf_counter()
    for chunk in chunks * 3:
        clf.predict(chunk)
    return len(chunks) * 3 * size / (time.perf_counter() - start)


def median_of(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0] if k != "first_error"} | {
        "errors": sum(r["errors"] for r in runs), "first_error": next((r["first_error"] for r in runs if r["errors"]), "")}


def report(a, runs, rss, soak, baselines, per_call: float) -> list[str]:
    import platform

    import torch

    labels = {key: label for key, label, *_ in ROWS}
    header = ("measure", "clients", "requests/s", "texts/s", "p50 ms", "p95 ms", "p99 ms", "errors")
    rows = [(labels[key], str(c), median_of(r)) for (key, c), r in runs.items()]
    if soak is not None:
        rows.append((f"soak, {a.soak:.0f} s", "32", soak))
    table = [header] + [(label, c, f"{m['requests_per_second']:,.0f}", f"{m['texts_per_second']:,.0f}",
                         f"{m['p50_ms']:.1f}", f"{m['p95_ms']:.1f}", f"{m['p99_ms']:.1f}", str(m["errors"]))
                        for label, c, m in rows]
    evaluation = "`rnncli eval` (SST-2 validation; its figure: the forward pass only)"
    for key, label in (("eval", evaluation), ("api", "Python API, 64 texts a call (tokenizing and the forward pass)"),
                       ("onnx eval", "`rnncli eval --runtime onnx` (as above)"),
                       ("onnx api", "Python API, runtime onnx, 64 texts a call")):
        table.append((label, "", "", f"{statistics.median(baselines[key]):,.0f}", "", "", "", ""))
    table.append(("`rnncli predict TEXT`, once per text", "1", f"{per_call:.2f}", f"{per_call:.2f}", "", "", "", ""))
    machine = (f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
               f"torch {torch.__version__}; medians of {a.rounds} rounds in turns, each {a.seconds:g} s or "
               f"{a.max_requests:,} requests; texts: SST-2 validation")
    lines = [machine]
    lines.extend(docs.markdown_table(table))
    lines.append("server RSS MB, before -> after the rows above: " +
                 ", ".join(f"{name} {b:,.0f} -> {e:,.0f}" for name, (b, e) in rss.items()))
    lines.extend(targets(runs, soak, baselines))
    errors = [m["first_error"] for _, _, m in rows if m["errors"]]
    if errors:
        lines.append(f"first error: {errors[0]}")
    return lines


def per_round(runs, a: tuple, b: tuple, key: str) -> list[float]:
    return [x[key] / y[key] for x, y in zip(runs[a], runs[b])]


def targets(runs, soak, baselines) -> list[str]:
    """The targets (the default model, served by torch, as `rnncli serve` runs it out of `rnncli
    train`), then the same comparisons for `--runtime onnx`, printed apart: they are this script's
    own checks, not targets."""
    checks = []
    for key, runtime in (("batched", "torch"), ("onnx batched", "onnx")):
        if (key, 32) not in runs or ("ceiling", 32) not in runs:
            continue
        ratios = per_round(runs, (key, 32), ("ceiling", 32), "requests_per_second")
        ratio = statistics.median(ratios)
        what = (f"32 clients, {runtime}: /predict at {ratio:.0%} of the ceiling's requests/s (rounds: "
                f"{', '.join(f'{r:.0%}' for r in ratios)})")
        checks.append((runtime, what, ">= 50%", ratio >= 0.5))
        p99 = statistics.median(r["p99_ms"] for r in runs[key, 32])
        checks.append((runtime, f"32 clients, {runtime}: p99 latency {p99:.1f} ms", "< 100 ms", p99 < 100))
    gains = per_round(runs, ("gru batched", 32), ("gru alone", 32), "requests_per_second")
    what = f"sst2-gru, 32 clients: micro-batching {statistics.median(gains):.2f}x the requests/s of --max-batch 1"
    checks.append(("torch", what, ">= 1.5x", statistics.median(gains) >= 1.5))
    for key, runtime, base in (("64", "torch", ""), ("onnx 64", "onnx", "onnx ")):
        for clients in (4, 16):
            served = [r["texts_per_second"] for r in runs[key, clients]]
            shares = [x / y for x, y in zip(served, baselines[base + "eval"])]  # round by round
            share = statistics.median(shares)
            api = statistics.median(x / y for x, y in zip(served, baselines[base + "api"]))
            what = (f"64 texts per request, {clients} clients, {runtime}: {share:.0%} of `rnncli eval "
                    f"--runtime {runtime}`'s sentences/s (rounds: {', '.join(f'{x:.0%}' for x in shares)}; "
                    f"{api:.0%} of the Python API's)")
            checks.append((runtime, what, ">= 80%", share >= 0.8))
    if soak is not None:
        growth = soak["rss"][1] / soak["rss"][0] - 1
        what = (f"soak: {soak['errors']} errors in {soak['requests']:,} requests, server RSS "
                f"{soak['rss'][0]:,.0f} -> {soak['rss'][1]:,.0f} MB ({growth:+.1%})")
        checks.append(("torch", what, "0 errors, < 10% growth", soak["errors"] == 0 and growth < 0.1))
    lines = []
    for runtime, kind in (("torch", "target"), ("onnx", "onnx check")):
        mine = [(what, want, ok) for r, what, want, ok in checks if r == runtime]
        lines += [f"{kind} {want}: {'met' if ok else 'MISSED'} ({what})" for what, want, ok in mine]
        missed = sum(not ok for *_, ok in mine)
        lines.append(f"{kind}s: " + ("all met" if not missed else f"{missed} missed"))
    return lines


if __name__ == "__main__":
    main()
