#!/usr/bin/env python3
"""`rnncli serve` under load, against the HTTP stack's own ceiling, measured in one run.

    python bench/serve.py [--data ../shared/data] [--seconds 5] [--max-requests 20000] [--soak 60]
                          [--models DIR] [--write-docs]

Trains (or reuses, under --models) two SST-2 models: the default one, and one of the
configs/sst2-gru.toml architecture (bidirectional GRU, attention; one epoch, no vectors: the speed is
the architecture's). Each server runs as its own process on a free loopback port; the load generator
here keeps C keep-alive connections busy (C clients, each sending its next request when the last is
answered) for --seconds or --max-requests, whichever comes first, and never sends anywhere but
127.0.0.1. Every answer is checked against the Python API's answer for its own text: a wrong,
missing or mixed-up answer counts as an error. Rows:
- the ceiling: a FastAPI endpoint that returns a constant, served the same way (uvicorn, one process);
- single-text /predict at 1, 8, 32 and 128 clients, micro-batching on (the default) and --max-batch 1;
- the GRU model at 32 clients, both ways; requests of 64 texts against `rnncli eval`'s sentences/s
  on the same SST-2 validation texts; `rnncli predict` run once per text (the per-call baseline);
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
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
        return float("nan")

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

def model(models: Path, name: str, sst2: Path, *flags: str) -> Path:
    out = models / name
    if not (out / "model.safetensors").is_file():
        print(f"training {name} on {sst2} ...", file=sys.stderr)
        subprocess.run([*RNNCLI, "train", "--dataset", str(sst2), "--epochs", "1", "--out", str(out), *flags],
                       check=True, stdout=subprocess.DEVNULL)
    return out


def validation_texts(sst2: Path) -> list[str]:
    import pyarrow.parquet as pq

    return [str(t) for t in pq.read_table(sst2 / "validation.parquet").column("sentence").to_pylist()]


def eval_speed(folder: Path, sst2: Path) -> float:
    """`rnncli eval`'s sentences/s on SST-2 validation, the median of three runs."""
    runs = [json.loads(subprocess.run([*RNNCLI, "eval", "--model", str(folder), "--dataset", str(sst2), "--json"],
                                      check=True, capture_output=True, text=True).stdout)["examples_per_second"]
            for _ in range(3)]
    return statistics.median(runs)


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
    ap.add_argument("--seconds", type=float, default=5.0, help="longest measurement per row")
    ap.add_argument("--max-requests", type=int, default=20000, help="most requests per row")
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
        lines = measure(a, default, gru, validation_texts(sst2))
    print("\n".join(lines))
    if a.write_docs:
        docs.write_section("bench/serve.py", "\n".join(lines))


def measure(a, default: Path, gru: Path, texts: list[str]) -> list[str]:
    from rnncli import load_model

    clf, gru_clf = load_model(default), load_model(gru)
    servers = {"ceiling": Server([PY, "-c", CEILING]), "batched": serve(default), "alone": serve(default, "--max-batch", "1"),
               "gru batched": serve(gru), "gru alone": serve(gru, "--max-batch", "1")}
    rss = {name: [s.rss_mb()] for name, s in servers.items()}
    constant = [(request_bytes(servers["ceiling"].port, {"texts": ["x"]}), lambda body: b"positive" in body)]
    work = {name: single_text_work(s.port, gru_clf if name.startswith("gru") else clf, texts)
            for name, s in servers.items() if name != "ceiling"}
    rows, r = [], {}
    for clients in (int(c) for c in a.clients.split(",")):
        for name, label in (("ceiling", "constant answer (the ceiling)"), ("batched", "/predict, micro-batching"),
                            ("alone", "/predict, --max-batch 1")):
            r[name, clients] = load(servers[name].port, constant if name == "ceiling" else work[name],
                                    clients, a.seconds, a.max_requests)
            rows.append((label, clients, r[name, clients]))
    for name, label in (("gru batched", "sst2-gru /predict, micro-batching"), ("gru alone", "sst2-gru /predict, --max-batch 1")):
        r[name, 32] = load(servers[name].port, work[name], 32, a.seconds, a.max_requests)
        rows.append((label, 32, r[name, 32]))
    batches = batch_work(servers["batched"].port, clf, texts, 64)
    r["64"] = load(servers["batched"].port, batches, 4, a.seconds, a.max_requests, texts_per_request=64)
    rows.append(("/predict, 64 texts per request", 4, r["64"]))
    for name in servers:
        rss[name].append(servers[name].rss_mb())
    soak = None
    if a.soak > 0:
        before = servers["batched"].rss_mb()
        soak = load(servers["batched"].port, work["batched"], 32, a.soak, 10**9)
        soak["rss"] = (before, servers["batched"].rss_mb())
        rows.append((f"soak, {a.soak:.0f} s", 32, soak))
    for s in servers.values():
        s.stop()
    evaluation = eval_speed(default, a.data / "sst2")
    per_call = predict_per_call(default, texts[:a.calls])
    return report(a, rows, r, rss, soak, evaluation, per_call)


def report(a, rows, r, rss, soak, evaluation, per_call) -> list[str]:
    import platform

    import torch

    header = ("measure", "clients", "requests/s", "texts/s", "p50 ms", "p95 ms", "p99 ms", "errors")
    table = [header] + [(label, str(c), f"{m['requests_per_second']:,.0f}", f"{m['texts_per_second']:,.0f}",
                         f"{m['p50_ms']:.1f}", f"{m['p95_ms']:.1f}", f"{m['p99_ms']:.1f}", str(m["errors"]))
                        for label, c, m in rows]
    table.append(("`rnncli eval` (SST-2 validation, forward pass only)", "", "", f"{evaluation:,.0f}", "", "", "", ""))
    table.append(("`rnncli predict TEXT`, once per text", "1", f"{per_call:.2f}", f"{per_call:.2f}", "", "", "", ""))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
             f"{a.seconds:g} s or {a.max_requests:,} requests per row; texts: SST-2 validation"]
    for i, row in enumerate(table):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if i == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines.append("server RSS MB, before -> after the rows above: " +
                 ", ".join(f"{name} {b:,.0f} -> {e:,.0f}" for name, (b, e) in rss.items()))
    lines.extend(targets(r, soak, evaluation))
    errors = [m["first_error"] for _, _, m in rows if m["errors"]]
    if errors:
        lines.append(f"first error: {errors[0]}")
    return lines


def targets(r, soak, evaluation) -> list[str]:
    checks = []
    if ("batched", 32) in r:
        ratio = r["batched", 32]["requests_per_second"] / r["ceiling", 32]["requests_per_second"]
        checks.append((f"32 clients: /predict at {ratio:.0%} of the ceiling's requests/s", ">= 50%", ratio >= 0.5))
        p99 = r["batched", 32]["p99_ms"]
        checks.append((f"32 clients: p99 latency {p99:.1f} ms", "< 100 ms", p99 < 100))
    gain = r["gru batched", 32]["requests_per_second"] / r["gru alone", 32]["requests_per_second"]
    checks.append((f"sst2-gru, 32 clients: micro-batching {gain:.2f}x the requests/s of --max-batch 1", ">= 1.5x",
                   gain >= 1.5))
    share = r["64"]["texts_per_second"] / evaluation
    checks.append((f"64 texts per request: {share:.0%} of `rnncli eval`'s sentences/s", ">= 80%", share >= 0.8))
    if soak is not None:
        growth = soak["rss"][1] / soak["rss"][0] - 1
        checks.append((f"soak: {soak['errors']} errors in {soak['requests']:,} requests, server RSS "
                       f"{soak['rss'][0]:,.0f} -> {soak['rss'][1]:,.0f} MB ({growth:+.1%})",
                       "0 errors, < 10% growth", soak["errors"] == 0 and growth < 0.1))
    lines = [f"target {want}: {'met' if ok else 'MISSED'} ({what})" for what, want, ok in checks]
    missed = [what for what, _, ok in checks if not ok]
    return [*lines, "all targets met" if not missed else f"targets missed: {len(missed)}"]


if __name__ == "__main__":
    main()
