"""Running the app: the model is loaded and the socket bound before anything is announced, one
process serves (or uvicorn's workers do), and SIGTERM or Ctrl-C stop it gracefully: no new
connections, the requests in flight answered, then a normal exit."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket

from rnncli.errors import RnncliError
from rnncli.serve.options import ServeOptions

OPTIONS_ENV = "RNNCLI_SERVE_OPTIONS"  # how uvicorn's worker processes learn the options...
KEY_ENV = "RNNCLI_API_KEY"  # ...and the key, which never travels in a command line or a log
GRACE_SECONDS = 30
WORKER_HEALTHCHECK_SECONDS = 60
BACKLOG = 2048  # uvicorn's own default  # longest wait for requests in flight after a stop signal


def build(options: ServeOptions):
    """The app for `options`: the model folder is checked and loaded here, before any port opens."""
    from rnncli.checkpoint import inspect
    from rnncli.predict import Classifier
    from rnncli.serve.app import create_app

    checked = inspect(options.model)  # a broken or crafted folder fails in milliseconds
    classifier = Classifier.load(options.model, device=options.device, inspected=checked,
                                 runtime=options.runtime).warm()
    if classifier.runtime == "onnx" and options.runtime == "auto":
        classifier.explainer()  # loaded now, not by the first /explain
    return create_app(classifier, options)


def app_from_env():
    """The app in a worker process (`--workers N`), from the options its parent put in the environment."""
    fields = json.loads(os.environ[OPTIONS_ENV])
    app = build(ServeOptions(**fields, api_key=os.environ.get(KEY_ENV)))
    _freeze_heap()
    return app


def listen(options: ServeOptions) -> socket.socket:
    """A socket bound to the host and port (a free one for port 0), or a one-line error.

    With --workers it is bound but not listening: uvicorn binds the port again for its workers once
    this socket is closed, and a connection queued on it would be reset then; until the workers
    listen, a client is refused, as by any server that has not started yet."""
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((options.host, options.port))
        if options.workers == 1:
            sock.listen(BACKLOG)  # connections wait in the queue until uvicorn takes them
    except OSError as e:
        sock.close()
        raise RnncliError(f"cannot listen on {options.host}:{options.port} ({e.strerror or e})") from None
    sock.set_inheritable(True)
    return sock


def address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run(options: ServeOptions, sock: socket.socket, app=None) -> None:
    """Serve until SIGTERM or Ctrl-C; `app` is `build(options)`, made by the caller so that a broken
    model folder is reported before the address is."""
    import uvicorn

    settings = {"log_level": "info", "access_log": options.access_log, "server_header": False,
                "proxy_headers": False, "timeout_graceful_shutdown": GRACE_SECONDS}
    if options.workers > 1:
        port = sock.getsockname()[1]
        sock.close()  # uvicorn binds it again for its workers
        _export_options(options)
        uvicorn.run("rnncli.serve.server:app_from_env", factory=True, host=options.host, port=port,
                    workers=options.workers, **settings, **_worker_patience(uvicorn))
        return
    server = uvicorn.Server(uvicorn.Config(app, **settings))
    _freeze_heap()
    quiet = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:  # uvicorn re-raises the stop signal once it has stopped; here that signal ends nothing more
        server.run(sockets=[sock])
    finally:
        for sig, handler in quiet.items():
            signal.signal(sig, handler)
    if not server.started:
        raise RnncliError("the server did not start (see the log above)")


def _worker_patience(uvicorn) -> dict:
    """uvicorn kills a worker that misses its 5 s health ping, and resets the connections it
    holds; a worker importing torch and loading the model on a busy machine can miss it, so it gets
    WORKER_HEALTHCHECK_SECONDS (where uvicorn has the setting, 0.30 on)."""
    import inspect

    known = inspect.signature(uvicorn.Config.__init__).parameters
    return {"timeout_worker_healthcheck": WORKER_HEALTHCHECK_SECONDS} if "timeout_worker_healthcheck" in known else {}


def _freeze_heap() -> None:
    """Move what loading made (torch's modules, the model, the tokenizer) out of the garbage
    collector's view: a full collection then walks only what requests make, instead of pausing a
    request for tens of milliseconds now and then."""
    import gc

    gc.collect()
    gc.freeze()


def _export_options(options: ServeOptions) -> None:
    fields = {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.name != "api_key"}
    os.environ[OPTIONS_ENV] = json.dumps(fields)
    if options.api_key is not None:
        os.environ[KEY_ENV] = options.api_key
