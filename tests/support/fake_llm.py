"""A local model server speaking Bedrock's Converse and OpenAI's chat-completions wire formats.

boto3 (through ``endpoint_url``) and urllib3 reach it over real HTTP on 127.0.0.1, so request
signing, serialisation, error parsing and retries are the real ones. Its "model" corrects
deterministically: each numbered line ``<n>|<text>`` of the transcript gets the replacement
table applied, plus every ``wrong => right`` line of the prompt's glossary. Asked with a tool
(Converse ``toolConfig``, OpenAI ``tools``), it answers as the real ones do when the tool is
forced: a ``toolUse`` block (``stopReason`` "tool_use") or a ``tool_calls`` entry whose
arguments are a JSON string, holding one edit ``{line, from, to}`` per replacement made, plus
any ``Script.edits`` (a scripted model proposing given edits). It can be told to misbehave:
fail with an AWS-style error N times, drop or invent a line, stop at the output limit, rewrite
lines wholesale, answer in prose instead of calling the tool, obey instructions injected in
the prompt, or be slow. Like
Bedrock, it refuses model ids that cannot be called (``Script.model_errors``: the retired
Claude 3.5 Sonnet by default) with Bedrock's status, ``x-amzn-ErrorType`` header and message.

Usage is reported as the real servers report it, with a stand-in tokenizer (``tokens``: UTF-8
bytes / 4, about a real tokenizer's count for English, and about 1.6x as many per word for
Hebrew), and Bedrock's prompt caching: a request with a ``cachePoint`` for a model that caches
(``prompt_cache.min_cacheable_tokens``) whose prefix (tools, system, content before the point)
reaches the model's minimum writes it on first sight (``cacheWriteInputTokens``) and reads it
after (``cacheReadInputTokens``); ``inputTokens`` is the rest. ``peak_in_flight`` is the most
requests it was answering at once.
"""

from __future__ import annotations

import functools
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

from chalicelib.correction.prompt_cache import min_cacheable_tokens

_LINE = re.compile(r"^(\d+)\|(.*)$")
_MODEL_PATH = re.compile(r"/model/(?P<model>.+)/converse$")
ERRORS = {  # bedrock-runtime's service model: error code -> HTTP status
    "ThrottlingException": 429,
    "ValidationException": 400,
    "ServiceUnavailableException": 503,
    "InternalServerException": 500,
    "AccessDeniedException": 403,
    "ResourceNotFoundException": 404,
}
# What Bedrock answers when the model cannot be called as configured: (code, message).
MODEL_ID_INVALID = ("ValidationException", "The provided model identifier is invalid.")
NO_MODEL_ACCESS = (
    "AccessDeniedException",
    "You don't have access to the model with the specified model ID.",
)
USE_CASE_NOT_SUBMITTED = (
    "ResourceNotFoundException",
    "Model use case details have not been submitted for this account. Fill out the "
    "Anthropic use case details form before using the model.",
)
RETIRED_MODEL_ID = "anthropic.claude-3-5-sonnet-20240620-v1:0"  # EOL on Bedrock 2026-03-01


@dataclass
class Script:
    """What the model does; tests change it between calls."""

    replacements: dict[str, str] = field(default_factory=dict)
    # Edits proposed as they are, on top of the replacements'; an echo answer (no tool)
    # echoes its lines with them applied.
    edits: list[dict[str, Any]] = field(default_factory=list)
    fail_times: int = 0  # the first N requests fail with `error`
    error: str = "ThrottlingException"
    error_message: str | None = None  # None: "<code> from the fake model"
    # Converse model id -> (code, message) it is always answered with.
    model_errors: dict[str, tuple[str, str]] = field(
        default_factory=lambda: {RETIRED_MODEL_ID: MODEL_ID_INVALID}
    )
    # drop | invent | truncate | rewrite | merge; with a tool also: prose (no tool call)
    misbehave: str | None = None
    misbehave_times: int | None = None  # None: every request
    misbehave_when: str | None = None  # only requests whose prompt contains this
    obey_injection: bool = True  # "IGNORE PREVIOUS INSTRUCTIONS" in the prompt: answer 1 line
    delay_seconds: float = 0.0


@dataclass
class Answer:
    text: str
    truncated: bool  # cut off at the output limit
    line_ids: list[int]
    edits: list[dict[str, Any]] | None  # None: no tool call, the text is the answer


@dataclass
class Call:
    path: str
    body: dict[str, Any]
    system: str
    user: str
    line_ids: list[int]
    output: str = ""  # what the answer's output tokens are counted on


class FakeModel:
    def __init__(self) -> None:
        self.script = Script()
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._requests = 0
        self._misbehaved = 0
        self._in_flight = 0
        self.peak_in_flight = 0
        self._cached_prefixes: set[tuple[str, str]] = set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        # A short poll: stop() waits for the serving loop to notice (half a second by default).
        serve = functools.partial(self._server.serve_forever, poll_interval=0.02)
        self._thread = threading.Thread(target=serve, daemon=True)

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

    def _cache_usage(self, model_id: str, body: dict[str, Any]) -> CacheUsage:
        """What Bedrock's prompt cache does with this Converse request."""
        prefix = cached_prefix(body)
        minimum = min_cacheable_tokens(model_id)
        if prefix is None or minimum is None or tokens(prefix) < minimum:
            return CacheUsage(0, 0)
        with self._lock:
            seen = (model_id, prefix) in self._cached_prefixes
            self._cached_prefixes.add((model_id, prefix))
        return CacheUsage(tokens(prefix), 0) if seen else CacheUsage(0, tokens(prefix))

    # -- the "model" ---------------------------------------------------------------------

    def _answer(self, user: str, with_tool: bool) -> Answer:
        script = self.script
        glossary = dict(
            (a.strip(), b.strip())
            for a, _, b in (line.partition("=>") for line in user.split("\n") if "=>" in line)
        )
        # The lines to correct: after their heading, up to the next blank line (read-only
        # context lines and a retry's instruction follow one).
        block = user.split("Transcript lines:\n", 1)[-1].split("\n\n", 1)[0]
        lines = [(int(m[1]), m[2]) for m in map(_LINE.match, block.split("\n")) if m]
        ids = [n for n, _ in lines]
        corrected = []
        edits: list[dict[str, Any]] = []
        for number, original in lines:
            text = original
            for wrong, right in {**script.replacements, **glossary}.items():
                if wrong in text:
                    edits.append({"line": number, "from": wrong, "to": right})
                    text = text.replace(wrong, right)
            corrected.append((number, text))
        scripted = [edit for edit in script.edits if edit.get("line") in ids]
        edits += scripted
        for edit in scripted:
            corrected = [
                (n, t.replace(str(edit["from"]), str(edit["to"]), 1) if n == edit["line"] else t)
                for n, t in corrected
            ]
        if script.obey_injection and "IGNORE PREVIOUS INSTRUCTIONS" in user.upper():
            hacked = [{"line": ids[0], "from": lines[0][1], "to": "HACKED"}]
            return Answer("1|HACKED", False, ids, hacked if with_tool else None)
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
                edits = edits[:-1]
            elif script.misbehave == "invent":
                corrected.append((max(ids) + 1000, "a line nobody said"))
                edits.append({"line": max(ids) + 1000, "from": "", "to": "a line nobody said"})
            elif script.misbehave == "truncate":
                corrected = corrected[: max(1, len(corrected) // 2)]
                edits = edits[: len(edits) // 2]
                truncated = True
            elif script.misbehave == "rewrite":
                corrected = [(n, "Completely different words that were never spoken here at all")
                             for n, _ in corrected]  # fmt: skip
                edits = [{"line": n, "from": t, "to": "Completely different words, never spoken"}
                         for n, t in lines]  # fmt: skip
            elif script.misbehave == "merge":
                corrected = [(corrected[0][0], " ".join(t for _, t in corrected))]
        text = "\n".join(f"{n}|{t}" for n, t in corrected)
        if truncated:
            text = text[: max(1, len(text) - 7)]
        if not with_tool or (misbehave and script.misbehave == "prose"):
            return Answer(text, truncated, ids, None)
        return Answer("", truncated, ids, edits)

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

            def _bedrock_error(self, code: str, message: str) -> None:
                # rest-json: botocore reads the code from the header, the message from the body.
                self._send(
                    ERRORS[code],
                    {"message": message},
                    {
                        "x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazon.bedrock/"
                    },
                )

            def do_POST(self) -> None:
                with model._lock:
                    model._in_flight += 1
                    model.peak_in_flight = max(model.peak_in_flight, model._in_flight)
                try:
                    self._answer_post()
                finally:
                    with model._lock:
                        model._in_flight -= 1

            def _answer_post(self) -> None:
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
                with_tool = bool(body.get("tools") if openai else body.get("toolConfig"))
                answer = model._answer(user, with_tool)
                model.calls.append(Call(path, body, system, user, answer.line_ids, _output(answer)))
                if model.script.delay_seconds:
                    time.sleep(model.script.delay_seconds)
                target = _MODEL_PATH.search(path)
                refused = model.script.model_errors.get(target["model"]) if target else None
                if refused is not None:
                    self._bedrock_error(*refused)
                    return
                if failing:
                    code = model.script.error
                    message = model.script.error_message or f"{code} from the fake model"
                    if openai:
                        self._send(ERRORS[code], {"error": {"message": message, "type": code}}, {})
                    else:
                        self._bedrock_error(code, message)
                    return
                if openai:
                    self._send(200, _openai_answer(body, prompt_text(body), answer), {})
                else:
                    cache = model._cache_usage(target["model"] if target else "", body)
                    payload = _converse_answer(body, prompt_text(body), answer, cache)
                    self._send(200, payload, {"x-amzn-RequestId": "fake"})

        return Handler


def _tool_name(body: dict[str, Any], openai: bool) -> str:
    if openai:
        return str(body["tools"][0]["function"]["name"])
    return str(body["toolConfig"]["tools"][0]["toolSpec"]["name"])


def tokens(text: str) -> int:
    """The stand-in tokenizer: UTF-8 bytes / 4, rounded up."""
    return -(-len(text.encode("utf-8")) // 4)


@dataclass(frozen=True)
class CacheUsage:
    read: int
    write: int


def prompt_text(body: dict[str, Any]) -> str:
    """Everything a request's input tokens are counted on: tools, system, messages."""
    tools = body.get("tools") or body.get("toolConfig") or ""
    parts = [json.dumps(tools, ensure_ascii=False) if tools else ""]
    if "messages" in body and "system" in body:  # Converse
        parts += [block.get("text", "") for block in body["system"]]
    for message in body.get("messages", []):
        content = message["content"]
        if isinstance(content, str):
            parts.append(content)
        else:
            parts += [block.get("text", "") for block in content]
    return "".join(parts)


def cached_prefix(body: dict[str, Any]) -> str | None:
    """The text before a Converse request's last ``cachePoint`` (tools and system first,
    as Bedrock orders the prefix); None without one."""
    parts = [json.dumps(body["toolConfig"], ensure_ascii=False) if "toolConfig" in body else ""]
    blocks = [*body.get("system", [])]
    for message in body.get("messages", []):
        blocks += message["content"]
    prefix = None
    for block in blocks:
        if "cachePoint" in block:
            prefix = "".join(parts)
        parts.append(block.get("text", ""))
    return prefix


def _output(answer: Answer) -> str:
    """The answer as the model writes it: the text, or the tool call's JSON."""
    if answer.edits is None:
        return answer.text
    return json.dumps({"edits": answer.edits}, ensure_ascii=False)


def _openai_answer(body: dict[str, Any], prompt: str, answer: Answer) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.text or None}
    output = _output(answer)
    finish = "length" if answer.truncated else "stop"
    if answer.edits is not None:
        arguments = output
        if answer.truncated:
            arguments = arguments[: len(arguments) // 2]  # cut off mid-JSON, as a real one is
        output = arguments
        message["tool_calls"] = [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": _tool_name(body, openai=True), "arguments": arguments},
            }
        ]
        finish = "length" if answer.truncated else "tool_calls"
    return {
        "id": "cmpl-1",
        "object": "chat.completion",
        "model": body["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": tokens(prompt),
            "completion_tokens": tokens(output),
            "total_tokens": tokens(prompt) + tokens(output),
        },
    }


def _converse_answer(
    body: dict[str, Any], prompt: str, answer: Answer, cache: CacheUsage
) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    output = _output(answer)
    stop = "max_tokens" if answer.truncated else "end_turn"
    if answer.edits is not None:
        tool_input = {"edits": answer.edits}
        name = _tool_name(body, openai=False)
        use = {"toolUseId": "tooluse_fake1", "name": name, "input": tool_input}
        content.append({"toolUse": use})
        stop = "max_tokens" if answer.truncated else "tool_use"
    elif answer.text:
        content.append({"text": answer.text})
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": {
            "inputTokens": tokens(prompt) - cache.read - cache.write,
            "outputTokens": tokens(output),
            "totalTokens": tokens(prompt) + tokens(output),
            "cacheReadInputTokens": cache.read,
            "cacheWriteInputTokens": cache.write,
        },
        "metrics": {"latencyMs": 1},
    }


@contextmanager
def running_model() -> Iterator[FakeModel]:
    model = FakeModel()
    model.start()
    try:
        yield model
    finally:
        model.stop()
