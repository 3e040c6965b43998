"""The LLM endpoint: configuration, an OpenAI-compatible client that survives a flaky server,
error classification, the price table and the endpoint probe of `autopilot doctor`.

Any server that speaks the chat-completions protocol works (OpenAI, vLLM, Ollama, the
llama.cpp server, LM Studio): requests go through the official ``openai`` client with its own
retries switched off, so that every attempt is seen here, classified, recorded (never with the
key) and retried on our terms: 429 honouring ``Retry-After``, 5xx, timeouts and refused
connections with exponential backoff; anything else is final.

Configuration, first found wins: arguments, the environment (``OPENAI_API_KEY``,
``OPENAI_BASE_URL``, ``AUTOPILOT_LLM_MODEL``), the config file (``$AUTOPILOT_LLM_CONFIG``,
else ``<home>/llm.toml``), the defaults. See ``docs/llm.md``.
"""

from __future__ import annotations

import dataclasses
import email.utils
import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

ENV_KEY = "OPENAI_API_KEY"
ENV_BASE_URL = "OPENAI_BASE_URL"
ENV_MODEL = "AUTOPILOT_LLM_MODEL"
ENV_CONFIG = "AUTOPILOT_LLM_CONFIG"
ENV_HOME = "AUTOPILOT_HOME"
CONFIG_NAME = "llm.toml"
OPENAI_URL = "https://api.openai.com/v1"
NO_KEY = "no-key"  # local servers take any key; the client insists on one
STRUCTURED_MODES = ("auto", "off")

# USD per million tokens (prompt, completion). A model matches its own name or the longest
# listed prefix (dated snapshots); local models cost nothing; prices change: override them
# under [prices] in llm.toml.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
}

RETRIABLE = frozenset({"rate_limited", "server_error", "timeout", "connection"})
_CONTEXT_RE = re.compile(r"context[ _-]?(length|size|window)|maximum context|too many tokens|"
                         r"prompt is too long|exceed_context|context_length_exceeded", re.I)


@dataclass(frozen=True)
class LLMConfig:
    """Where the LLM is and how to talk to it. ``api_key`` never shows in ``repr``,
    :meth:`public` or :meth:`settings`; ``key_source`` says where it came from."""

    base_url: str = OPENAI_URL
    model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    key_source: str = "not set"
    temperature: float = 0.2
    max_tokens: int = 8192
    timeout_s: float = 120.0
    max_retries: int = 4
    backoff_s: float = 1.0
    max_wait_s: float = 120.0
    stream: bool = False
    structured: str = "auto"
    include_samples: bool = False
    prices: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    source: str = "defaults"

    def __post_init__(self) -> None:
        if self.structured not in STRUCTURED_MODES:
            raise ValueError(f"LLM config structured must be one of {STRUCTURED_MODES}, "
                             f"got {self.structured!r}")
        for name in ("timeout_s", "max_tokens"):
            if not getattr(self, name) > 0:
                raise ValueError(f"LLM config {name} must be > 0, got {getattr(self, name)!r}")
        for name in ("max_retries", "backoff_s", "max_wait_s", "temperature"):
            if getattr(self, name) < 0:
                raise ValueError(f"LLM config {name} must be >= 0, got {getattr(self, name)!r}")

    def replace(self, **changes: Any) -> LLMConfig:
        return dataclasses.replace(self, **changes)

    def price(self, model: str) -> tuple[float, float] | None:
        """(prompt, completion) USD per million tokens: exact name, else longest prefix."""
        if model in self.prices:
            return self.prices[model]
        prefixes = [p for p in self.prices if model.startswith(p)]
        return self.prices[max(prefixes, key=len)] if prefixes else None

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        """USD for one exchange; ``None`` when the model has no price (e.g. a local model)."""
        price = self.price(model)
        if price is None:
            return None
        return round((prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6, 8)

    def settings(self) -> dict[str, Any]:
        """The client settings stored with every request, so that a replay behaves alike."""
        return {"timeout_s": self.timeout_s, "max_retries": self.max_retries,
                "stream": self.stream, "structured": self.structured,
                "include_samples": self.include_samples}

    def public(self) -> dict[str, Any]:
        """Everything but the key, for reports and `autopilot doctor`."""
        return {"base_url": self.base_url, "model": self.model, "key": self.key_source,
                "temperature": self.temperature, "max_tokens": self.max_tokens,
                "source": self.source, **self.settings()}


_FILE_KEYS = {f.name for f in dataclasses.fields(LLMConfig)} - {"key_source", "source"}


def config_path(env: Mapping[str, str] | None = None) -> Path:
    """``$AUTOPILOT_LLM_CONFIG``, else ``llm.toml`` in the store home."""
    env = os.environ if env is None else env
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG]).expanduser()
    return Path(env.get(ENV_HOME) or ".autopilot").expanduser() / CONFIG_NAME


def is_configured(env: Mapping[str, str] | None = None) -> bool:
    """Whether the user set up an endpoint at all (an env variable or a config file)."""
    env = os.environ if env is None else env
    return any(env.get(k) for k in (ENV_KEY, ENV_BASE_URL, ENV_MODEL)) or \
        config_path(env).is_file()


def resolve_config(env: Mapping[str, str] | None = None, **overrides: Any) -> LLMConfig:
    """The configuration from arguments (``overrides``, ``None`` ones ignored), then the
    environment, then the config file, then the defaults."""
    env = os.environ if env is None else env
    path = config_path(env)
    file = _read_config_file(path) if path.is_file() else {}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(overrides) - _FILE_KEYS)
    if unknown:
        raise ValueError(f"unknown LLM settings {unknown}; allowed: {sorted(_FILE_KEYS)}")
    values: dict[str, Any] = {}
    sources = []
    if file:
        sources.append(str(path))
        key_env = file.pop("api_key_env", None)
        values.update({k: v for k, v in file.items() if k != "api_key"})
    else:
        key_env = None
    for name, var in (("base_url", ENV_BASE_URL), ("model", ENV_MODEL)):
        if env.get(var):
            values[name] = env[var]
            sources.append(f"${var}")
    values.update({k: v for k, v in overrides.items() if k != "api_key"})
    if overrides:
        sources.append("arguments")
    key, key_source = None, "not set"
    for value, where in ((overrides.get("api_key"), "argument"),
                         (env.get(key_env) if key_env else None, f"${key_env}"),
                         (env.get(ENV_KEY), f"${ENV_KEY}"),
                         (file.get("api_key"), f"config file {path}")):
        if value:
            key, key_source = value, where
            break
    if "prices" in values:
        values["prices"] = {**DEFAULT_PRICES, **{m: tuple(map(float, p))
                                                 for m, p in values["prices"].items()}}
    return LLMConfig(**values, api_key=key, key_source=key_source,
                     source=", ".join(dict.fromkeys(sources)) or "defaults")


def _read_config_file(path: Path) -> dict[str, Any]:
    text = path.read_text()
    if path.suffix == ".json":
        data = json.loads(text)
    else:
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            raise ValueError(f"{path}: reading TOML needs Python 3.11+; use a .json config "
                             f"file (set ${ENV_CONFIG}) or environment variables") from None
        data = tomllib.loads(text)
    unknown = sorted(set(data) - _FILE_KEYS - {"api_key_env"})
    if unknown:
        raise ValueError(f"{path}: unknown LLM settings {unknown}; allowed: "
                         f"{sorted(_FILE_KEYS | {'api_key_env'})}")
    return data


# ---- errors ------------------------------------------------------------------------------

class EndpointError(Exception):
    """One failed attempt, classified: ``rate_limited``, ``server_error``, ``timeout``,
    ``connection`` (retried), ``context_length`` (the caller shrinks the prompt),
    ``bad_request``, ``auth``, ``quota``, ``not_found`` (final)."""

    def __init__(self, kind: str, message: str, *, status: int | None = None,
                 retry_after: float | None = None, body: Any = None,
                 latency_s: float | None = None):
        super().__init__(message)
        self.kind, self.message, self.status = kind, message, status
        self.retry_after, self.body = retry_after, body
        self.latency_s = latency_s  # known when replayed; else the client measures it

    @property
    def retriable(self) -> bool:
        return self.kind in RETRIABLE

    def describe(self) -> str:
        status = f"HTTP {self.status} " if self.status else ""
        return f"{status}{self.kind}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "status": self.status,
                "retry_after": self.retry_after, "body": self.body}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EndpointError:
        return cls(d["kind"], d["message"], status=d.get("status"),
                   retry_after=d.get("retry_after"), body=d.get("body"))


class EndpointDown(Exception):
    """The endpoint cannot give an answer: retries spent, or a final refusal (key, model)."""


# ---- replies, exchanges, transports --------------------------------------------------------

@dataclass(frozen=True)
class Reply:
    """One answer of the endpoint: the text, why it stopped, the token counts."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    model: str
    latency_s: float
    response: dict[str, Any] = field(default_factory=dict)  # what is stored

    @classmethod
    def from_stored(cls, row: Mapping[str, Any]) -> Reply:
        r = row["response"]
        return cls(r["content"], r["finish_reason"], row["prompt_tokens"] or 0,
                   row["completion_tokens"] or 0, r.get("model") or row["model"],
                   row["latency_s"] or 0.0, r)


@dataclass(frozen=True)
class Exchange:
    """One attempt as it is recorded: request and response without the key."""

    iteration: int
    model: str
    base_url: str
    request: dict[str, Any]
    response: dict[str, Any] | None
    status: str  # "ok" or the EndpointError kind
    error: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: float | None
    latency_s: float


class Transport(Protocol):
    def send(self, body: dict[str, Any], *, iteration: int, timeout_s: float) -> Reply:
        """One chat-completions request; raises :class:`EndpointError` on failure."""

    def models(self, timeout_s: float) -> list[str]:
        """The model ids the endpoint serves."""


class OpenAITransport:
    """HTTP through the official ``openai`` client, its own retries off."""

    def __init__(self, config: LLMConfig):
        try:
            import openai
        except ModuleNotFoundError:
            raise EndpointDown("the `openai` package is not installed: pip install openai"
                               ) from None
        self._openai = openai
        self.client = openai.OpenAI(base_url=config.base_url, api_key=config.api_key or NO_KEY,
                                    timeout=config.timeout_s, max_retries=0)

    def send(self, body: dict[str, Any], *, iteration: int, timeout_s: float) -> Reply:
        start = time.monotonic()
        try:
            if body.get("stream"):
                return self._stream(body, timeout_s, start)
            completion = self.client.chat.completions.create(**body, timeout=timeout_s)
        except self._openai.OpenAIError as e:
            raise classify(e, self._openai, timeout_s) from None
        except ValueError as e:  # a body that is not JSON
            raise EndpointError("server_error", f"unusable response: {e}") from None
        latency = time.monotonic() - start
        raw = completion.model_dump(mode="json", exclude_none=True)
        choice = completion.choices[0] if completion.choices else None
        text = (choice.message.content or "") if choice else ""
        finish = choice.finish_reason if choice else None
        usage = completion.usage
        return _reply(text, finish, usage.prompt_tokens if usage else None,
                      usage.completion_tokens if usage else None, completion.model or
                      body["model"], latency, body, raw=raw)

    def _stream(self, body: dict[str, Any], timeout_s: float, start: float) -> Reply:
        pieces: list[str] = []
        finish = model = None
        usage = None
        chunks = 0
        with self.client.chat.completions.create(**body, timeout=timeout_s) as stream:
            for chunk in stream:
                chunks += 1
                model = chunk.model or model
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    if choice.delta and choice.delta.content:
                        pieces.append(choice.delta.content)
                    finish = choice.finish_reason or finish
        if finish is None:
            raise EndpointError("connection", f"the answer stream broke off after {chunks} "
                                              "chunks, before its end")
        return _reply("".join(pieces), finish, usage.prompt_tokens if usage else None,
                      usage.completion_tokens if usage else None, model or body["model"],
                      time.monotonic() - start, body, raw={"chunks": chunks})

    def models(self, timeout_s: float) -> list[str]:
        try:
            return sorted(m.id for m in self.client.models.list(timeout=timeout_s))
        except self._openai.OpenAIError as e:
            raise classify(e, self._openai, timeout_s) from None


def _reply(text: str, finish: str | None, prompt_tokens: int | None,
           completion_tokens: int | None, model: str, latency: float, body: dict[str, Any],
           raw: dict[str, Any]) -> Reply:
    """A reply with token counts; when the server gave none, estimated at 4 characters a
    token (and marked so)."""
    estimated = prompt_tokens is None or completion_tokens is None
    if prompt_tokens is None:
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in body["messages"]) // 4
    if completion_tokens is None:
        completion_tokens = len(text) // 4
    response = {"content": text, "finish_reason": finish, "model": model,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "estimated": estimated}, "raw": raw}
    return Reply(text, finish, prompt_tokens, completion_tokens, model, latency, response)


def classify(e: Exception, openai: Any, timeout_s: float) -> EndpointError:
    """An ``openai`` exception as an :class:`EndpointError` of one of the known kinds."""
    if isinstance(e, openai.APITimeoutError):
        return EndpointError("timeout", f"no answer within {timeout_s:g} s")
    if isinstance(e, openai.APIConnectionError):
        cause = e.__cause__ or e.__context__
        return EndpointError("connection", f"cannot reach the endpoint ({cause or e})")
    if isinstance(e, openai.APIStatusError):
        status, body = e.status_code, e.body
        msg = _error_text(body) or str(e)
        retry_after = parse_retry_after(e.response.headers)
        if status == 429:
            kind = "quota" if "quota" in msg.lower() else "rate_limited"
        elif status >= 500 or status == 408:
            kind = "server_error"
        elif _CONTEXT_RE.search(msg):
            kind = "context_length"
        elif status in (401, 403):
            kind = "auth"
        elif status == 404:
            kind = "not_found"
        else:
            kind = "bad_request"
        return EndpointError(kind, msg, status=status, retry_after=retry_after, body=body)
    return EndpointError("server_error", f"unusable response: {e}")


def _error_text(body: Any) -> str:
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return str(inner.get("message") or inner.get("code") or json.dumps(inner))
        return str(inner)
    return str(body) if body else ""


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    if headers.get("retry-after-ms"):
        try:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        return None if parsed is None else max(0.0, email.utils.mktime_tz(parsed) - time.time())


# ---- the client --------------------------------------------------------------------------

class LLMClient:
    """Chat completions with retries, structured-output fallback and a record of every
    attempt. ``record`` receives each :class:`Exchange` (already free of the key)."""

    def __init__(self, config: LLMConfig, *, transport: Transport | None = None,
                 record: Callable[[Exchange], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep):
        self.config = config
        self._transport = transport
        self.record = record
        self.sleep = sleep
        self.structured = config.structured == "auto"
        self.model = config.model

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            self._transport = OpenAITransport(self.config)
        return self._transport

    def resolve_model(self) -> str:
        """The configured model, else the only one the endpoint serves."""
        if self.model:
            return self.model
        where = f"the endpoint {self.config.base_url}"
        try:
            served = self.transport.models(min(self.config.timeout_s, 30.0))
        except EndpointError as e:
            raise EndpointDown(f"no model configured (set ${ENV_MODEL}), and {where} does not "
                               f"list its models: {redact(e.describe(), self.config.api_key)}"
                               ) from None
        if len(served) != 1:
            raise EndpointDown(f"no model configured: set ${ENV_MODEL} or `model` in "
                               f"{CONFIG_NAME}; {where} serves {len(served)} models"
                               + (f" ({', '.join(served[:10])})" if served else ""))
        self.model = served[0]
        return self.model

    def body(self, messages: list[dict[str, str]], schema: dict[str, Any] | None) -> dict:
        """The request body exactly as sent (and stored): never holds the key."""
        body: dict[str, Any] = {"model": self.resolve_model(), "messages": messages,
                                "temperature": self.config.temperature,
                                "max_tokens": self.config.max_tokens}
        if schema is not None and self.structured:
            body["response_format"] = {"type": "json_schema", "json_schema": schema}
        if self.config.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def complete(self, messages: list[dict[str, str]], *, iteration: int,
                 schema: dict[str, Any] | None = None) -> Reply:
        """One answer; raises :class:`EndpointDown` when none can be had and
        :class:`EndpointError` ``context_length`` for the caller to shrink the prompt."""
        cfg, retries = self.config, 0
        while True:
            body = self.body(messages, schema)
            start = time.monotonic()
            try:
                reply = self.transport.send(body, iteration=iteration, timeout_s=cfg.timeout_s)
            except EndpointError as e:
                if e.latency_s is None:
                    e.latency_s = time.monotonic() - start
                self._record(iteration, body, None, e)
                if e.kind == "bad_request" and "response_format" in body:
                    log.warning("LLM endpoint refused structured output (%s); asking for fenced "
                                "code from now on", self._safe(e.describe()))
                    self.structured = False
                    continue
                if e.kind == "context_length":
                    raise
                where = f"the LLM endpoint {cfg.base_url}"
                if not e.retriable:
                    raise EndpointDown(f"{where} refused the request: "
                                       f"{self._safe(e.describe())}") from None
                if retries >= cfg.max_retries:
                    raise EndpointDown(f"{where} gave no answer in {retries + 1} attempts; "
                                       f"last: {self._safe(e.describe())}") from None
                wait = e.retry_after if e.retry_after is not None else self._backoff(retries)
                if wait > cfg.max_wait_s:
                    raise EndpointDown(f"{where} asks to wait {wait:.0f} s (Retry-After), more "
                                       f"than max_wait_s = {cfg.max_wait_s:g}") from None
                retries += 1
                log.warning("LLM endpoint: %s; retry %d of %d in %.2f s",
                            self._safe(e.describe()), retries, cfg.max_retries, wait)
                self.sleep(wait)
                continue
            self._record(iteration, body, reply, None)
            return reply

    def _backoff(self, retries: int) -> float:
        base = self.config.backoff_s * 2 ** retries
        return min(self.config.max_wait_s, base * (1 + 0.25 * random.random()))

    def _safe(self, text: str) -> str:
        return redact(text, self.config.api_key)

    def _record(self, iteration: int, body: dict[str, Any], reply: Reply | None,
                error: EndpointError | None) -> None:
        if self.record is None:
            return
        cfg = self.config
        request = {"url": cfg.base_url.rstrip("/") + "/chat/completions", "body": body,
                   "settings": cfg.settings()}
        if reply is not None:
            ex = Exchange(iteration, body["model"], cfg.base_url, request, reply.response, "ok",
                          None, reply.prompt_tokens, reply.completion_tokens,
                          cfg.cost(reply.model, reply.prompt_tokens, reply.completion_tokens),
                          round(reply.latency_s, 4))
        else:
            ex = Exchange(iteration, body["model"], cfg.base_url, request,
                          {"error": error.to_dict()}, error.kind, error.describe(), None, None,
                          None, round(error.latency_s or 0.0, 4))
        self.record(redact(ex, cfg.api_key))


def redact(value: Any, key: str | None) -> Any:
    """``value`` with every occurrence of the key replaced (strings, dicts, lists, records)."""
    if not key:
        return value
    if isinstance(value, str):
        return value.replace(key, "[redacted]")
    if isinstance(value, dict):
        return {redact(k, key): redact(v, key) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(v, key) for v in value)
    if isinstance(value, Exchange):
        return dataclasses.replace(value, **{f.name: redact(getattr(value, f.name), key)
                                             for f in dataclasses.fields(value)})
    return value


# ---- doctor ------------------------------------------------------------------------------

def probe_endpoint(config: LLMConfig | None = None, timeout_s: float = 3.0) -> dict[str, Any]:
    """Whether the endpoint answers and which models it serves, within ``timeout_s``. Never
    raises: every failure is a message in the result."""
    if config is None and not is_configured():
        return {"configured": False,
                "message": f"no LLM endpoint configured (set ${ENV_BASE_URL}, ${ENV_KEY}, "
                           f"${ENV_MODEL} or write {config_path()}); see docs/llm.md"}
    try:
        cfg = (config or resolve_config()).replace(timeout_s=timeout_s)
    except (ValueError, OSError) as e:
        return {"configured": True, "ok": False, "error": f"bad LLM configuration: {e}"}
    out: dict[str, Any] = {"configured": True, **cfg.public()}
    start = time.monotonic()
    try:
        served = OpenAITransport(cfg).models(timeout_s)
    except (EndpointError, EndpointDown) as e:
        text = e.describe() if isinstance(e, EndpointError) else str(e)
        return {**out, "ok": False, "error": redact(text, cfg.api_key)}
    out.update(ok=True, latency_s=round(time.monotonic() - start, 3), models=served[:20],
               n_models=len(served))
    if cfg.model:
        out["model_served"] = cfg.model in served
    elif len(served) == 1:
        out["model"] = served[0]
        out["model_served"] = True
    return out
