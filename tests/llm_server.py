"""A scripted chat-completions server on 127.0.0.1 for the LLM agent's tests.

It speaks the OpenAI protocol (``POST /v1/chat/completions``, streaming as server-sent events
or not, and ``GET /v1/models``) and answers each chat request with the next scripted
:class:`Step`: an answer text with its finish reason, an HTTP error with headers (429 with
Retry-After, 500...), a delay before answering, a stream that breaks off. It records every
request it receives, body and headers, so a test can read the prompts that reached it.
``structured=False`` plays a server without ``response_format``: such requests get a 400 and
consume no step.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Step:
    """One scripted behaviour: an answer (``status`` 200) or an error, after ``delay_s``."""

    text: str = ""
    finish_reason: str = "stop"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    error: str = ""
    delay_s: float = 0.0
    break_stream: bool = False  # streaming: send half the chunks, then hang up


def answer(text: str, **kw: Any) -> Step:
    return Step(text=text, **kw)


def error(status: int, message: str, **headers: str) -> Step:
    return Step(status=status, error=message,
                headers={k.replace("_", "-"): v for k, v in headers.items()})


@dataclass(frozen=True)
class Received:
    path: str
    method: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    at: float

    @property
    def prompt(self) -> str:
        """All message contents of a chat request, joined."""
        return "\n".join(str(m.get("content", "")) for m in (self.body or {}).get("messages", []))


class ScriptedLLMServer:
    """``with ScriptedLLMServer([...]) as server:`` then point the client at ``server.url``."""

    def __init__(self, steps: list[Step] = (), *, model: str = "scripted-model",
                 structured: bool = True, api_key: str | None = None):
        self.steps = list(steps)
        self.model, self.structured, self.api_key = model, structured, api_key
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def chats(self) -> list[Received]:
        return [r for r in self.received if r.path.endswith("/chat/completions")]

    def script(self, *steps: Step) -> None:
        with self._lock:
            self.steps.extend(steps)

    def __enter__(self) -> ScriptedLLMServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _next(self, body: dict[str, Any]) -> Step:
        if not self.structured and "response_format" in body:
            return error(400, "response_format is not supported by this server")
        with self._lock:
            if not self.steps:
                return error(500, "the test script has no more steps")
            return self.steps.pop(0)


def _handler(server: ScriptedLLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep the test output clean
            pass

        def _record(self, body: dict[str, Any] | None) -> None:
            server.received.append(Received(self.path, self.command,
                                            {k.lower(): v for k, v in self.headers.items()},
                                            body, time.monotonic()))

        def _denied(self) -> bool:
            if server.api_key and self.headers.get("Authorization") != \
                    f"Bearer {server.api_key}":
                self._json(401, {"error": {"message": "invalid api key",
                                           "type": "invalid_request_error"}})
                return True
            return False

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._record(None)
            if self._denied():
                return
            if self.path.rstrip("/").endswith("/models"):
                self._json(200, {"object": "list", "data": [
                    {"id": server.model, "object": "model", "owned_by": "tests"}]})
            else:
                self._json(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            self._record(body)
            if self._denied():
                return
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._json(404, {"error": {"message": f"no route {self.path}"}})
                return
            step = server._next(body)
            time.sleep(step.delay_s)
            try:
                if step.status != 200:
                    self._json(step.status, {"error": {"message": step.error,
                                                       "type": "scripted_error"}},
                               step.headers)
                elif body.get("stream"):
                    self._stream(body, step)
                else:
                    self._json(200, _completion(body, step, server.model))
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                pass

        def _json(self, status: int, payload: dict[str, Any],
                  headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, body: dict[str, Any], step: Step) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            base = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk",
                    "created": 0, "model": server.model}
            pieces = [step.text[i:i + 40] for i in range(0, len(step.text), 40)]
            events = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant",
                                                                  "content": ""},
                                            "finish_reason": None}]}]
            events += [{**base, "choices": [{"index": 0, "delta": {"content": p},
                                             "finish_reason": None}]} for p in pieces]
            events.append({**base, "choices": [{"index": 0, "delta": {},
                                                "finish_reason": step.finish_reason}]})
            if (body.get("stream_options") or {}).get("include_usage"):
                events.append({**base, "choices": [], "usage": _usage(body, step.text)})
            if step.break_stream:
                events = events[:len(events) // 2]
            for ev in events:
                self.wfile.write(f"data: {json.dumps(ev)}\n\n".encode())
                self.wfile.flush()
            if step.break_stream:
                self.close_connection = True
                return
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()

    return Handler


def _usage(body: dict[str, Any], text: str) -> dict[str, int]:
    prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4
    completion = max(1, len(text) // 4)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _completion(body: dict[str, Any], step: Step, model: str) -> dict[str, Any]:
    return {"id": "chatcmpl-scripted", "object": "chat.completion", "created": 0,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": step.text},
                         "finish_reason": step.finish_reason}],
            "usage": _usage(body, step.text)}
