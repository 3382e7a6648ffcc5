"""A scripted OpenAI-compatible server on 127.0.0.1 for what the LiteLLM mocks cannot do: a genuine mid-stream
``data: {"error": ...}`` frame, ``Retry-After`` on a 429, and a slow stream to cancel. The model name picks the
behaviour; every request is recorded (path, headers, JSON, time)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TEXT_PIECES = ["INT. ", "LIGHT", "HOUSE", " - NIGHT."]


def chunk(content: str | None = None, finish: str | None = None) -> bytes:
    delta = {} if content is None else {"content": content}
    body = {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "mock",
        "choices": [{"index": 0, "delta": delta, **({"finish_reason": finish} if finish else {})}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


class MockOpenAI(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, name="mock-openai", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"

    def chat_requests(self, model: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if (r["json"] or {}).get("model") == model]

    def handle_error(self, request, client_address) -> None:
        """A client that hangs up mid-stream (a cancel) is expected; no traceback."""

    def close(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=5)


class _Handler(BaseHTTPRequestHandler):
    server: MockOpenAI
    protocol_version = "HTTP/1.1"

    def log_message(self, *_args) -> None:  # keep test output clean
        pass

    def _record(self, body: dict | None) -> None:
        with self.server.lock:
            self.server.requests.append(
                {"path": self.path, "headers": dict(self.headers), "json": body, "time": time.monotonic()}
            )

    def _json(self, status: int, body, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, frames, delay: float = 0.0) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        try:
            for frame in frames:
                self.wfile.write(frame)
                self.wfile.flush()
                if delay:
                    time.sleep(delay)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def do_GET(self) -> None:
        self._record(None)
        if self.path == "/health/liveliness":
            self._json(200, "I'm alive!")
        elif self.path == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": "midstream", "object": "model"}]})
        else:
            self._json(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"null")
        self._record(body)
        model = (body or {}).get("model")
        err = {
            "message": "upstream went away mid-answer",
            "type": "internal_server_error",
            "param": None,
            "code": "500",
        }
        if model == "midstream":
            self._stream(
                [
                    chunk("Shot 1"),
                    chunk(": wide"),
                    f"data: {json.dumps({'error': err})}\n\n".encode(),
                    b"data: [DONE]\n\n",
                ]
            )
        elif model == "retry-once":
            if len(self.server.chat_requests("retry-once")) == 1:
                self._json(
                    429,
                    {"error": {"message": "slow down", "type": "throttling_error", "param": None, "code": "429"}},
                    {"retry-after": "1"},
                )
            else:
                self._stream([chunk(p) for p in TEXT_PIECES] + [chunk(finish="stop"), b"data: [DONE]\n\n"])
        elif model == "always-429":
            self._json(
                429,
                {"error": {"message": "slow down", "type": "throttling_error", "param": None, "code": "429"}},
                {"retry-after": "0"},
            )
        elif model == "slow":
            self._stream([chunk(f"piece {i} ") for i in range(50)] + [b"data: [DONE]\n\n"], delay=0.2)
        elif model == "echo-key":
            key = self.headers.get("authorization", "")
            self._json(
                401,
                {"error": {"message": f"key {key} is not valid", "type": "auth_error", "param": None, "code": "401"}},
            )
        else:
            self._json(
                400,
                {
                    "error": {
                        "message": f"unknown model {model}",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "400",
                    }
                },
            )
