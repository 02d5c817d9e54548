"""`rnncli serve`: a trained model kept loaded behind an HTTP API (FastAPI on uvicorn).

`options.py` holds what a server is told (this module re-exports it, and imports nothing heavy, so
the CLI's `--help` stays fast and names the extra when it is missing); `app.py` the endpoints,
`batcher.py` the micro-batching, `metrics.py` the Prometheus counters and `server.py` the
listening socket, the worker processes and the graceful stop.
"""

from rnncli.serve.options import EXTRA, ServeOptions, require_extra

__all__ = ["EXTRA", "ServeOptions", "require_extra"]
