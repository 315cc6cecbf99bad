"""A local model server speaking Bedrock's Converse and OpenAI's chat-completions wire formats.

boto3 (through ``endpoint_url``) and urllib3 reach it over real HTTP on 127.0.0.1, so request
signing, serialisation, error parsing and retries are the real ones. Its "model" corrects
deterministically: each numbered line ``<n>|<text>`` of the transcript gets the replacement
table applied, plus every ``wrong => right`` line of the prompt's glossary. It can be told
to misbehave: fail with an AWS-style error N times, drop or invent a line, stop at the output
limit, rewrite lines wholesale, obey instructions injected in the prompt, or be slow.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

_LINE = re.compile(r"^(\d+)\|(.*)$")
ERRORS = {
    "ThrottlingException": 429,
    "ValidationException": 400,
    "ServiceUnavailableException": 503,
    "InternalServerException": 500,
}


@dataclass
class Script:
    """What the model does; tests change it between calls."""

    replacements: dict[str, str] = field(default_factory=dict)
    fail_times: int = 0  # the first N requests fail with `error`
    error: str = "ThrottlingException"
    misbehave: str | None = None  # drop | invent | truncate | rewrite | preamble
    misbehave_times: int | None = None  # None: every request
    misbehave_when: str | None = None  # only requests whose prompt contains this
    obey_injection: bool = True  # "IGNORE PREVIOUS INSTRUCTIONS" in the prompt: answer 1 line
    delay_seconds: float = 0.0


@dataclass
class Call:
    path: str
    body: dict[str, Any]
    system: str
    user: str
    line_ids: list[int]


class FakeModel:
    def __init__(self) -> None:
        self.script = Script()
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._requests = 0
        self._misbehaved = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def converse_calls(self) -> list[Call]:
        return [c for c in self.calls if c.path.endswith("/converse")]

    # -- the "model" ---------------------------------------------------------------------

    def _answer(self, system: str, user: str) -> tuple[str, bool, list[int]]:
        """(text, cut off at the output limit, line ids asked for)."""
        script = self.script
        glossary = dict(
            (a.strip(), b.strip())
            for a, _, b in (line.partition("=>") for line in user.split("\n") if "=>" in line)
        )
        block = user.split("Transcript lines:\n", 1)[-1]
        lines = [(int(m[1]), m[2]) for m in map(_LINE.match, block.split("\n")) if m]
        ids = [n for n, _ in lines]
        corrected = []
        for number, original in lines:
            text = original
            for wrong, right in {**script.replacements, **glossary}.items():
                text = text.replace(wrong, right)
            corrected.append((number, text))
        if script.obey_injection and "IGNORE PREVIOUS INSTRUCTIONS" in user.upper():
            return "1|HACKED", False, ids
        with self._lock:
            misbehave = (
                script.misbehave is not None
                and (script.misbehave_times is None or self._misbehaved < script.misbehave_times)
                and (script.misbehave_when is None or script.misbehave_when in user)
            )
            if misbehave:
                self._misbehaved += 1
        truncated = False
        if misbehave:
            if script.misbehave == "drop":
                corrected = corrected[:-1] if len(corrected) > 1 else []
            elif script.misbehave == "invent":
                corrected.append((max(ids) + 1000, "a line nobody said"))
            elif script.misbehave == "truncate":
                corrected = corrected[: max(1, len(corrected) // 2)]
                truncated = True
            elif script.misbehave == "rewrite":
                corrected = [(n, "Completely different words that were never spoken here at all")
                             for n, _ in corrected]  # fmt: skip
            elif script.misbehave == "merge":
                corrected = [(corrected[0][0], " ".join(t for _, t in corrected))]
        text = "\n".join(f"{n}|{t}" for n, t in corrected)
        if truncated:
            text = text[: max(1, len(text) - 7)]
        return text, truncated, ids

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        model = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str]) -> None:
                data = json.dumps(payload, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                path = unquote(self.path)
                openai = path.endswith("/chat/completions")
                if openai:
                    system = next(m["content"] for m in body["messages"] if m["role"] == "system")
                    user = next(m["content"] for m in body["messages"] if m["role"] == "user")
                else:
                    system = "".join(block["text"] for block in body.get("system", []))
                    user = "".join(
                        block.get("text", "") for block in body["messages"][-1]["content"]
                    )
                with model._lock:
                    model._requests += 1
                    failing = model._requests <= model.script.fail_times
                text, truncated, ids = model._answer(system, user)
                model.calls.append(Call(path, body, system, user, ids))
                if model.script.delay_seconds:
                    time.sleep(model.script.delay_seconds)
                if failing:
                    code = model.script.error
                    status = ERRORS[code]
                    if openai:
                        self._send(status, {"error": {"message": code, "type": code}}, {})
                    else:
                        self._send(
                            status, {"message": f"{code} from the fake model"},
                            {"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/"},
                        )  # fmt: skip
                    return
                if openai:
                    self._send(
                        200,
                        {
                            "id": "cmpl-1",
                            "object": "chat.completion",
                            "model": body["model"],
                            "choices": [
                                {
                                    "index": 0,
                                    "message": {"role": "assistant", "content": text},
                                    "finish_reason": "length" if truncated else "stop",
                                }
                            ],
                            "usage": {"prompt_tokens": len(user), "completion_tokens": len(text)},
                        },
                        {},
                    )
                    return
                self._send(
                    200,
                    {
                        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
                        "stopReason": "max_tokens" if truncated else "end_turn",
                        "usage": {
                            "inputTokens": len(user),
                            "outputTokens": len(text),
                            "totalTokens": len(user) + len(text),
                        },
                        "metrics": {"latencyMs": 1},
                    },
                    {"x-amzn-RequestId": "fake-request"},
                )

        return Handler


@contextmanager
def running_model() -> Iterator[FakeModel]:
    model = FakeModel()
    model.start()
    try:
        yield model
    finally:
        model.stop()
