"""The models a transcript can be corrected by, chosen with ``CORRECTOR``.

- ``bedrock``: Claude (or any chat model) through the Bedrock Converse API.
- ``openai``: any OpenAI-compatible chat-completions server (vLLM, llama.cpp, Ollama...).
- ``none``: no model; the transcript is passed through and marked ``success_uncorrected``.

A corrector answers one prompt (a system prompt, and a user message in two parts: what every
chunk of the recording shares, then the chunk), in text or, when it is given a ``Tool``, with
that tool's input: the tool is forced (Converse ``toolChoice``, OpenAI ``tool_choice``), so the
answer is JSON that matches the tool's schema rather than prose to parse. Errors that may pass
(throttling, 5xx, timeouts) are retried with backoff inside the call, a bounded number of
times; what is left is raised as ``ModelUnavailableError`` so that the message goes back to
the queue. A request the model refuses as invalid (``ModelRejectedError``: too long,
filtered) costs that chunk its correction, not the whole job. An answer that means the model
cannot be called as configured (an unknown or retired model id, no model access, a missing
permission) is a ``ConfigurationError``: it fails the invocation and names what to fix, and
is never taken for one chunk's refusal.

Bedrock prompt caching: for a model that supports it (``prompt_cache``), a ``cachePoint``
follows the shared part, so that the tool, the system prompt, the description and the glossary
are paid in full once per recording and read from the cache (at a tenth of the price) by the
chunks after. The answer's cache reads and writes are reported with its tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import urllib3
from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.correction.prompt_cache import min_cacheable_tokens
from pipeline_core.errors import ConfigurationError, PermanentError, bedrock_misconfiguration

if TYPE_CHECKING:
    from mypy_boto3_bedrock_runtime import BedrockRuntimeClient


@dataclass(frozen=True)
class Tool:
    """The one tool a model is made to call; ``schema`` is its input's JSON schema."""

    name: str
    description: str
    schema: dict[str, Any]


@dataclass(frozen=True)
class UserMessage:
    """The user turn: ``shared`` is the same for every chunk of a recording (the cacheable
    part), ``chunk`` is this chunk's lines."""

    shared: str
    chunk: str

    @property
    def text(self) -> str:
        return self.shared + self.chunk


@dataclass(frozen=True)
class ModelAnswer:
    text: str
    truncated: bool  # the model stopped at its output limit
    input_tokens: int = 0
    output_tokens: int = 0
    # The input the model called the tool with; None when it did not call it (or sent
    # something that is not a JSON object).
    tool_input: dict[str, Any] | None = None
    # Prompt caching, as the server reported it: input read from the cache (billed at a
    # tenth) and written to it (billed at 1.25x); ``input_tokens`` excludes both on Bedrock.
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


class ModelUnavailableError(RuntimeError):
    """The model could not be reached or kept refusing for load; worth retrying later."""


class ModelRejectedError(PermanentError, RuntimeError):
    """The model refused this request as invalid; retrying the same request will not help."""


class Corrector(Protocol):
    @property
    def identity(self) -> str:
        """Which model this is (part of the checkpoints' fingerprint)."""
        ...

    def complete(self, system: str, user: UserMessage, tool: Tool | None = None) -> ModelAnswer: ...


class BedrockCorrector:
    """Bedrock's Converse API; retries and backoff are botocore's (see ``aws.bedrock_runtime``)."""

    def __init__(self, client: BedrockRuntimeClient, model_id: str, max_tokens: int) -> None:
        self._client = client
        self._model_id = model_id
        self._max_tokens = max_tokens
        self._caches = min_cacheable_tokens(model_id) is not None

    @property
    def identity(self) -> str:
        return f"bedrock:{self._model_id}"

    def _content(self, user: UserMessage) -> list[dict[str, Any]]:
        if not (self._caches and user.shared):
            return [{"text": user.text}]
        # Below the model's minimum the request still succeeds, uncached (Bedrock's rule).
        return [{"text": user.shared}, {"cachePoint": {"type": "default"}}, {"text": user.chunk}]

    def complete(self, system: str, user: UserMessage, tool: Tool | None = None) -> ModelAnswer:
        request: dict[str, Any] = {
            "modelId": self._model_id,
            "system": [{"text": system}],
            "messages": [{"role": "user", "content": self._content(user)}],
            "inferenceConfig": {"maxTokens": self._max_tokens, "temperature": 0.0},
        }
        if tool is not None:
            spec = {"name": tool.name, "description": tool.description,
                    "inputSchema": {"json": tool.schema}}  # fmt: skip
            request["toolConfig"] = {
                "tools": [{"toolSpec": spec}],
                "toolChoice": {"tool": {"name": tool.name}},
            }
        try:
            response = self._client.converse(**request)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code", "?"), error.get("Message", "")
            misconfigured = bedrock_misconfiguration(code, message, self._model_id)
            if misconfigured is not None:
                raise misconfigured from exc
            if code == "ValidationException":
                raise ModelRejectedError(f"Bedrock {code}: {message}") from exc
            raise ModelUnavailableError(f"Bedrock {code}: {message}") from exc
        except BotoCoreError as exc:
            raise ModelUnavailableError(f"Bedrock unreachable: {exc}") from exc
        content = response["output"].get("message", {}).get("content", [])
        text = "".join(block.get("text", "") for block in content)
        tool_input = None
        if tool is not None:
            calls = [b["toolUse"] for b in content if b.get("toolUse", {}).get("name") == tool.name]
            tool_input = _json_object(calls[0].get("input")) if calls else None
        usage: Any = response.get("usage", {})
        return ModelAnswer(
            text=text,
            truncated=response.get("stopReason") == "max_tokens",
            input_tokens=int(usage.get("inputTokens", 0)),
            output_tokens=int(usage.get("outputTokens", 0)),
            tool_input=tool_input,
            cache_read_tokens=int(usage.get("cacheReadInputTokens", 0)),
            cache_write_tokens=int(usage.get("cacheWriteInputTokens", 0)),
        )


def _json_object(value: Any) -> dict[str, Any] | None:
    """A tool input as a dict: Converse gives it decoded, OpenAI as a JSON string."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


class OpenAICompatibleCorrector:
    """``POST {base_url}/chat/completions`` with urllib3.

    urllib3 rather than the ``openai`` package: it is already in the Lambda runtime (botocore
    depends on it), so the bundle stays small, and its ``Retry`` gives the bounded retries
    with exponential backoff and ``Retry-After`` that Bedrock gets from botocore.
    """

    RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
    # A wrong key, a wrong URL or an unknown model: every request would fail alike.
    MISCONFIGURED_STATUSES = frozenset({401, 403, 404})

    def __init__(
        self,
        base_url: str,
        model: str,
        max_tokens: int,
        *,
        api_key: str | None = None,
        max_attempts: int = 6,
        read_timeout: float = 180,
        backoff_factor: float = 1.0,
    ) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._model = model
        self._max_tokens = max_tokens
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        retry = urllib3.Retry(
            total=max_attempts - 1,
            backoff_factor=backoff_factor,
            backoff_max=20,
            status_forcelist=self.RETRY_STATUSES,
            allowed_methods=frozenset({"POST"}),
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        self._http = urllib3.PoolManager(
            retries=retry, timeout=urllib3.Timeout(connect=10, read=read_timeout), maxsize=16
        )

    @property
    def identity(self) -> str:
        return f"openai:{self._url}:{self._model}"

    def complete(self, system: str, user: UserMessage, tool: Tool | None = None) -> ModelAnswer:
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": user.text},
            ],
            "temperature": 0,
            "max_tokens": self._max_tokens,
        }
        if tool is not None:
            function = {"name": tool.name, "description": tool.description,
                        "parameters": tool.schema}  # fmt: skip
            body["tools"] = [{"type": "function", "function": function}]
            body["tool_choice"] = {"type": "function", "function": {"name": tool.name}}
        try:
            response = self._http.request(
                "POST", self._url, body=json.dumps(body).encode(), headers=self._headers
            )
        except urllib3.exceptions.HTTPError as exc:
            raise ModelUnavailableError(f"{self._url} unreachable: {exc}") from exc
        text = response.data.decode("utf-8", errors="replace")
        if response.status in self.RETRY_STATUSES:
            raise ModelUnavailableError(f"{self._url} answered {response.status}: {text[:300]}")
        if response.status in self.MISCONFIGURED_STATUSES:
            raise ConfigurationError(
                f"{self._url} answered {response.status} for model {self._model}: {text[:300]}",
                "check OPENAI_BASE_URL, OPENAI_MODEL and OPENAI_API_KEY of the LLM Caller",
            )
        if response.status >= 400:
            raise ModelRejectedError(f"{self._url} answered {response.status}: {text[:300]}")
        try:
            payload = json.loads(text)
            choice = payload["choices"][0]
            message = choice["message"]
            content = message.get("content") or ""
            calls = [
                call["function"]
                for call in message.get("tool_calls") or []
                if tool is not None and call["function"]["name"] == tool.name
            ]
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ModelRejectedError(f"{self._url} answered something else: {text[:300]}") from exc
        usage = payload.get("usage") or {}
        # Servers with automatic prefix caching (vLLM, OpenAI) say what they reused here,
        # within prompt_tokens: counted as cache reads, as Bedrock reports them.
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        return ModelAnswer(
            text=str(content),
            truncated=choice.get("finish_reason") == "length",
            input_tokens=int(usage.get("prompt_tokens", 0)) - int(cached),
            output_tokens=int(usage.get("completion_tokens", 0)),
            tool_input=_json_object(calls[0].get("arguments")) if calls else None,
            cache_read_tokens=int(cached),
        )
