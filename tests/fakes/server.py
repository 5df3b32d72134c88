"""A small real HTTP server on 127.0.0.1 (ephemeral port) with pluggable routes and faults.

Routes are plain functions ``handler(request) -> Response``; a fault queue per path lets
a test make the next N requests to a path fail (status, delay, dropped connection, bad
body) before normal service resumes.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class Response:
    status: int = 200
    body: Any = None  # JSON-able, or bytes sent as is
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering
    drop: bool = False  # close the connection in the middle of the body

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if self.body is None:
            return b""
        return json.dumps(self.body).encode()


Handler = Callable[[Request], Response]


class LocalApi:
    """Start with ``with LocalApi() as api:``; ``api.url`` is ``http://127.0.0.1:PORT``."""

    def __init__(self, default_headers: dict[str, str] | None = None):
        self.routes: list[tuple[str, re.Pattern, Handler]] = []
        self.faults: dict[str, list[Response]] = {}
        self.log: list[Request] = []
        self.default_headers = default_headers or {"Content-Type": "application/json"}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- configuration -------------------------------------------------------------------

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self.routes.append((method, re.compile(f"^{pattern}$"), handler))

    def fail_next(self, path: str, *responses: Response) -> None:
        """The next requests to ``path`` get these responses, in order."""
        with self._lock:
            self.faults.setdefault(path, []).extend(responses)

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> LocalApi:
        api = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                # Answer at once: no Nagle delay between the header and body writes.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                api._serve(self)

            def do_POST(self):
                api._serve(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    # -- serving -------------------------------------------------------------------------

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        request = Request(
            method=handler.command,
            path=parts.path,
            query={k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=handler.rfile.read(length) if length else b"",
        )
        with self._lock:
            self.log.append(request)
            queue = self.faults.get(request.path)
            response = queue.pop(0) if queue else None
        if response is None:
            response = self._dispatch(request)
        self._send(handler, response)

    def _dispatch(self, request: Request) -> Response:
        for method, pattern, route in self.routes:
            match = pattern.match(request.path)
            if match and method == request.method:
                return route(request, **match.groupdict())
        return Response(404, {"message": "Not Found"})

    def _send(self, handler: BaseHTTPRequestHandler, response: Response) -> None:
        if response.delay:
            time.sleep(response.delay)
        body = response.encoded()
        handler.send_response_only(response.status)  # no automatic Server/Date: the fake sends its own
        headers = {"Date": handler.date_time_string(), **self.default_headers, **response.headers}
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if response.drop:
            handler.wfile.write(body[: len(body) // 2])
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.shutdown(2)
            return
        handler.wfile.write(body)


# -- slow servers ------------------------------------------------------------------------------


@dataclass
class Trickle(Response):
    """A response written a byte at a time, ``interval`` seconds apart: its body, or (with
    ``head``) its status line and headers too - a server that never quite stops answering."""

    interval: float = 0.05
    head: bool = False


class TricklingApi(LocalApi):
    """A :class:`LocalApi` that also serves :class:`Trickle` responses (from routes or
    ``fail_next``). A trickle stops when the client hangs up or the server stops."""

    def __init__(self, default_headers: dict[str, str] | None = None):
        super().__init__(default_headers)
        self.stopping = threading.Event()
        self.hung_up = 0  # trickles the client hung up on

    def __enter__(self) -> TricklingApi:
        super().__enter__()
        assert self._server is not None
        # A client that gives up on a response hangs up on the server: not an error here.
        self._server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        address = self._server.server_address[:2] if self._server else None

        def wake() -> None:  # serve_forever notices a shutdown at its next poll; a connection wakes it
            try:
                connection = socket.create_connection(address, timeout=0.2)
            except OSError:
                return
            connection.close()

        if address:
            threading.Timer(0.01, wake).start()
        super().__exit__(*exc)

    def _send(self, handler: BaseHTTPRequestHandler, response: Response) -> None:
        if not isinstance(response, Trickle):
            super()._send(handler, response)
            return
        body = response.encoded()
        reason = handler.responses.get(response.status, ("",))[0]
        headers = {"Date": handler.date_time_string(), **self.default_headers, **response.headers}
        headers["Content-Length"] = str(len(body))
        head = f"HTTP/1.1 {response.status} {reason}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
        handler.close_connection = True
        try:
            if not response.head:
                handler.wfile.write(head.encode("latin-1"))
            slow = (head.encode("latin-1") if response.head else b"") + body
            for index in range(len(slow)):
                if self.stopping.wait(response.interval):
                    return
                handler.wfile.write(slow[index : index + 1])
        except OSError:
            with self._lock:
                self.hung_up += 1
