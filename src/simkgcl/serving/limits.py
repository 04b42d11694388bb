"""How much one HTTP request may ask of the service, and the ASGI guard for request bodies.

One valid request used to be able to take gigabytes: 1,000 users x k = every item on lastfm-kg
took 25.9 s, a 222 MB reply and 3.7 GB of server memory, and rendering that reply stalled every
other client. The limits below bound each request before any work is done:

* ``max_batch_users`` — users in one ``POST /v1/recommendations`` (422 above it);
* ``max_results`` — users x k, the rows of one reply (422 above it): the reply and the Python
  objects behind it grow with this, not with the catalogue;
* ``max_body_bytes`` — the request body, checked on ``Content-Length`` and again while the body
  streams in, so a chunked upload cannot exceed it either (413 above it);
* ``max_concurrent`` — requests scoring at once, in worker threads; the others wait their turn
  without holding a thread, and the event loop (``/health``, ``/v1/model``) never waits.

Scoring inside a request goes ``SCORE_CHUNK_USERS`` users at a time, so the score block is at
most ``SCORE_CHUNK_USERS x n_items`` floats whatever the batch size.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_BATCH_USERS = 1000
DEFAULT_MAX_RESULTS = 100_000  # ~6 MB of JSON; 1,000 users x k=100, or one user x 100k items
DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: 1,000 user ids of up to ~1,000 characters each
DEFAULT_MAX_CONCURRENT = 2
SCORE_CHUNK_USERS = 256

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


@dataclass(frozen=True)
class ServingLimits:
    """Per-request bounds of the HTTP service (``simkgcl serve --max-...``)."""

    max_batch_users: int = DEFAULT_MAX_BATCH_USERS
    max_results: int = DEFAULT_MAX_RESULTS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_concurrent: int = DEFAULT_MAX_CONCURRENT

    def __post_init__(self) -> None:
        for name in ("max_batch_users", "max_results", "max_body_bytes", "max_concurrent"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    def as_dict(self) -> dict[str, int]:
        return {"max_batch_users": self.max_batch_users, "max_results": self.max_results,
                "max_body_bytes": self.max_body_bytes, "max_concurrent": self.max_concurrent}


class BodySizeLimit:
    """ASGI middleware: answer 413 to a request whose body exceeds ``max_bytes``.

    A declared ``Content-Length`` over the limit is refused before reading; otherwise the body
    is read (at most ``max_bytes`` of it) and replayed to the app, so a body sent in chunks
    without a length is bounded too. Requests without a body pass straight through.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _may_have_body(scope):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._too_large(send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        body = json.dumps({
            "error": "payload_too_large",
            "detail": f"the request body exceeds {self.max_bytes} bytes (the server's "
                      "max_body_bytes limit; simkgcl serve --max-body-bytes)",
        }).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _may_have_body(scope: Scope) -> bool:
    if scope.get("method") in ("POST", "PUT", "PATCH"):
        return True
    return any(name in (b"content-length", b"transfer-encoding") for name, _ in scope["headers"])


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # malformed: read the body and let the size decide
    return None
