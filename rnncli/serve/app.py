"""The HTTP API of `rnncli serve`: what each endpoint takes and answers, and how a client's mistake
becomes a 4xx with a one-line `detail` while our own failure stays a 500 for that request alone."""

from __future__ import annotations

import contextlib
import hmac
import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from rnncli import __version__
from rnncli.errors import RnncliError
from rnncli.serve.batcher import MicroBatcher
from rnncli.serve.metrics import Metrics, MetricsMiddleware
from rnncli.serve.options import ServeOptions

# the page runs its own inline script and style, and reaches nothing but this server
PAGE_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
               "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
# answered without the API key: a load balancer's liveness probe, and the page, which holds no data
# (it asks for the key when the endpoints it calls do)
OPEN_PATHS = {"/health", "/"}
ENDPOINTS = {"/", "/predict", "/explain", "/info", "/health", "/metrics", "/docs", "/openapi.json"}


class HFParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    top_k: int | None = Field(None, ge=1, description="Labels per text, likeliest first (default: all).")


class PredictRequest(BaseModel):
    """`texts` for rnncli's records (as `rnncli predict --json` prints them), or `inputs` for the
    Hugging Face text-classification shape."""

    model_config = ConfigDict(extra="forbid", strict=True)
    texts: list[str] | None = Field(None, description="Texts to classify; one record each, in order.",
                                    examples=[["a gorgeous, witty film", "dull and far too long"]])
    top_k: int | None = Field(None, ge=1, description="Add the K likeliest labels to each record (`top`).")
    threshold: float | None = Field(None, gt=0, lt=1, allow_inf_nan=False,
                                    description="Two-class models: answer the second label only above this probability.")
    inputs: str | list[str] | None = Field(None, description="Hugging Face shape: a text or a list of texts.")
    parameters: HFParameters | None = None
    options: dict[str, Any] | None = Field(None, description="Hugging Face's options (wait_for_model, "
                                           "use_cache): accepted; a served model is always loaded.")

    @model_validator(mode="after")
    def _one_shape(self):
        if (self.texts is None) == (self.inputs is None):
            raise ValueError("give `texts` (rnncli's records) or `inputs` (Hugging Face's shape), one of them")
        if self.texts is not None and (self.parameters is not None or self.options is not None):
            raise ValueError("`parameters` and `options` go with `inputs`; with `texts` use `top_k`")
        if self.inputs is not None and (self.top_k is not None or self.threshold is not None):
            raise ValueError("`top_k` and `threshold` go with `texts`; with `inputs` use `parameters.top_k`")
        if self.texts is not None and not self.texts or self.inputs == []:
            raise ValueError("the list of texts is empty")
        return self

    def text_list(self) -> list[str]:
        if self.texts is not None:
            return self.texts
        return [self.inputs] if isinstance(self.inputs, str) else self.inputs


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    text: str = Field(description="One text to read word by word.", examples=["the acting is great but the plot is a mess"])


def create_app(classifier, options: ServeOptions):
    """The ASGI app serving `classifier` (a loaded `rnncli.predict.Classifier`) under `options`:
    the FastAPI app inside the metrics, the Host check and the key, with its POST endpoints reached
    directly (`DirectPosts`)."""
    metrics = Metrics(ENDPOINTS)
    batcher = MicroBatcher(lambda texts: classifier.predict(texts), options.max_batch,
                           options.max_wait_ms / 1000, observe=metrics.observe_batch)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="rnncli", summary="A recurrent-network text classifier, kept loaded.",
                  version=__version__, lifespan=lifespan)
    app.state.card = classifier.card() | {"serving": options.to_dict()}
    posts = _add_routes(app, classifier, batcher, metrics, options)
    _add_error_handlers(app)
    served = DirectPosts(app, posts)
    if options.api_key is not None:
        served = BearerKey(served, key=options.api_key)
    served = TrustedHostMiddleware(served, allowed_hosts=options.hosts())
    return Served(MetricsMiddleware(served, metrics=metrics), app.state.card)  # metrics outermost: every answer counts


def _add_routes(app: FastAPI, classifier, batcher: MicroBatcher, metrics: Metrics, options: ServeOptions) -> dict:
    """The endpoints, on `app`; returns the POST ones by path, for `DirectPosts`."""
    card = app.state.card

    @_documented_post(app, "/predict", PredictRequest,
                      summary="Classify texts: rnncli's records, or Hugging Face's label/score lists")
    async def predict(http: Request):
        with batcher.arriving():
            request = await _read(http, PredictRequest, options.max_body)
            texts = request.text_list()
            if len(texts) > options.max_texts:
                raise RnncliError(f"{len(texts)} texts in one request; this server takes at most "
                                  f"{options.max_texts} (--max-texts)")
            classifier.check_threshold(request.threshold)
            answer = batcher.enqueue(texts)
        predictions = await answer
        if request.texts is not None:
            return JSONResponse([p.at_threshold(request.threshold).to_dict(request.top_k) for p in predictions])
        k = request.parameters.top_k if request.parameters else None
        ranked = [[{"label": label, "score": score} for label, score in p.top(k or len(p.probabilities))]
                  for p in predictions]
        return JSONResponse(ranked[0] if isinstance(request.inputs, str) else ranked)

    @_documented_post(app, "/explain", ExplainRequest,
                      summary="How the model reads one text, word by word (predict --explain --json)")
    async def explain(http: Request):
        request = await _read(http, ExplainRequest, options.max_body)
        return JSONResponse((await batcher.call(classifier.explain, request.text)).to_dict())

    @app.get("/info", summary="The model card: labels, architecture, training data, metrics, versions")
    async def info():
        return JSONResponse(card)

    page = (Path(__file__).parent / "page.html").read_bytes()

    @app.get("/", summary="A page that shows the model reading a sentence (no API key needed)",
             response_class=HTMLResponse)
    async def index():
        return HTMLResponse(page, headers={"content-security-policy": PAGE_POLICY})

    @app.get("/health", summary="Liveness: answers while the server runs (no API key needed)")
    async def health():
        return {"status": "ok"}

    @app.get("/metrics", summary="Prometheus metrics in the text exposition format")
    async def prometheus():
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    return {"/predict": predict, "/explain": explain}


def _documented_post(app: FastAPI, path: str, body: type[BaseModel], summary: str):
    """Declare `POST path` to FastAPI, which documents it and its body schema on the OpenAPI page;
    requests reach the endpoint through `DirectPosts`, which reads the body itself (`_read`)."""

    def register(endpoint):
        schema = {"requestBody": {"required": True, "content": {"application/json": {
            "schema": body.model_json_schema()}}}}
        app.post(path, summary=summary, openapi_extra=schema)(endpoint)
        return endpoint

    return register


class Served:
    """What `create_app` returns: the ASGI app (the FastAPI app and the layers around it), with the
    model card it serves."""

    def __init__(self, asgi, card: dict):
        self.asgi = asgi
        self.card = card

    async def __call__(self, scope, receive, send):
        await self.asgi(scope, receive, send)


class DirectPosts:
    """POST requests to `posts`' paths go straight to their endpoints, past FastAPI's middleware
    stack and router (its error pages, telemetry, body limit, exit stacks and route matching: about
    a third of a /predict's time on the event loop); every other request goes to the app. An
    exception becomes the answer the app's own handlers give it (`_answer_for`), and our own bug is
    logged with its traceback, as uvicorn logs the app's."""

    def __init__(self, app, posts: dict):
        self.app = app
        self.posts = posts

    async def __call__(self, scope, receive, send):
        endpoint = self.posts.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if endpoint is None:
            await self.app(scope, receive, send)
            return
        try:
            response = await endpoint(Request(scope, receive))
        except Exception as e:  # every failure is answered; ours is logged too
            response = _answer_for(e)
            if response.status_code == 500:
                logging.getLogger("uvicorn.error").error("Exception in ASGI application", exc_info=e)
        await response(scope, receive, send)


async def _read(http: Request, model: type[BaseModel], limit: int):
    """The body as `model`, parsed and checked by pydantic in one pass over the bytes, or a one-line
    4xx. A body over `limit` bytes is refused before it is read (Content-Length) or as soon as it
    passes the limit (a streamed body)."""
    kind = http.headers.get("content-type", "")
    if "json" not in kind.split(";")[0]:
        raise HTTPException(415, f"send the body as JSON, with Content-Type: application/json (not {kind or 'none'})")
    too_large = f"the body is larger than this server takes: {limit:,} bytes (--max-body)"
    declared = http.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, too_large)
    chunks, size = [], 0
    async for chunk in http.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, too_large)
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise HTTPException(422, "a JSON body is required")
    try:
        return model.model_validate_json(body)
    except ValidationError as e:
        errors = e.errors(include_url=False)
        raise HTTPException(400 if errors[0]["type"] == "json_invalid" else 422, _one_line(errors)) from None


def _one_line(errors: list[dict]) -> str:
    """The first of pydantic's errors, as `texts.2: Input should be a valid string`."""
    first = errors[0]
    if first["type"] == "json_invalid":
        return f"the body is not valid JSON: {first['msg'].removeprefix('Invalid JSON: ')}"
    where = ".".join(str(part) for part in first["loc"])
    if not where and first["type"] == "model_type":
        return 'the body must be a JSON object, such as {"texts": ["a gorgeous, witty film"]}'
    message = first["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _answer_for(exc: Exception) -> JSONResponse:
    """A refusal's 4xx, a request the model cannot answer (RnncliError) as 422, our bug as 500."""
    if isinstance(exc, HTTPException):
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)
    if isinstance(exc, RnncliError):
        return JSONResponse({"detail": str(exc)}, status_code=422)
    return JSONResponse({"detail": "internal error: the server logged it; other requests are unaffected"},
                        status_code=500)


def _add_error_handlers(app: FastAPI) -> None:
    async def answer(request: Request, exc: Exception):
        return _answer_for(exc)

    for kind in (HTTPException, RnncliError, Exception):
        app.add_exception_handler(kind, answer)


class BearerKey:
    """Every endpoint but /health asks for `Authorization: Bearer KEY`, compared in constant time."""

    def __init__(self, app, key: str):
        self.app = app
        self.expected = f"Bearer {key}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                refusal = JSONResponse({"detail": "missing or wrong API key (Authorization: Bearer KEY)"},
                                       status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)
