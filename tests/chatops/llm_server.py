"""A local server speaking OpenAI's chat-completions protocol, scripted per test (the LLM peer).

``POST {base}/chat/completions`` answers with the next step of the script: a chat.completion object
whose message is text or ``tool_calls`` (the documented shape: ``choices[0].message.tool_calls[i] =
{id, type: "function", function: {name, arguments: <JSON string>}}``, ``finish_reason`` ``tool_calls``
or ``stop``, and ``usage``), an HTTP error with a body, or a hang. Every request is recorded, so
tests can check what the model was shown (which role carried which text) and which key it was sent.
Runs on 127.0.0.1 in a thread; the official ``openai`` client is pointed at it by ``base_url``.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclasses.dataclass(frozen=True)
class Text:
    content: str
    total_tokens: int = 100


@dataclasses.dataclass(frozen=True)
class Calls:
    calls: list[tuple[str, dict[str, Any]]]
    total_tokens: int = 100


@dataclasses.dataclass(frozen=True)
class Fail:
    status: int
    body: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Hang:
    seconds: float


Step = Text | Calls | Fail | Hang | Callable[[dict[str, Any]], "Text | Calls | Fail | Hang"]


@dataclasses.dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    def messages(self, role: str) -> list[dict[str, Any]]:
        return [m for m in self.body.get("messages", []) if m.get("role") == role]


class ScriptedLLM:
    """``with ScriptedLLM([step, ...]) as llm: llm.base_url``; the last step repeats when the script runs out."""

    def __init__(self, script: list[Step], model: str = "scripted-model") -> None:
        self.script = list(script)
        self.model = model
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._counter = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                request = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with server._lock:
                    server.requests.append(request)
                    step = server.script.pop(0) if len(server.script) > 1 else server.script[0]
                    server._counter += 1
                    number = server._counter
                if not self.path.endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": "not found"}})
                if callable(step) and not isinstance(step, (Text, Calls, Fail, Hang)):
                    step = step(body)
                if isinstance(step, Hang):
                    server._release.wait(step.seconds)
                    return self._send(504, {"error": {"message": "hung"}})
                if isinstance(step, Fail):
                    return self._send(step.status, step.body)
                return self._send(200, server.completion(step, number))

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def completion(self, step: Text | Calls, number: int) -> dict[str, Any]:
        if isinstance(step, Text):
            message: dict[str, Any] = {"role": "assistant", "content": step.content}
            finish = "stop"
        else:
            message = {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"call_{number}_{i}", "type": "function",
                 "function": {"name": name, "arguments": json.dumps(args)}}
                for i, (name, args) in enumerate(step.calls)]}
            finish = "tool_calls"
        return {"id": f"chatcmpl-{number}", "object": "chat.completion", "created": int(time.time()),
                "model": self.model, "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": step.total_tokens - 10, "completion_tokens": 10,
                          "total_tokens": step.total_tokens}}

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> ScriptedLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
