"""Where a judge model runs: a local transformers model, or any OpenAI-compatible chat-completions endpoint.

A backend turns chat conversations into completions, in input order. It never raises for one bad request: a request
that still fails after its retries comes back as ``Completion(text=None, error=...)``, which the judge turns into an
unparseable judgment (label 0). It raises :class:`JudgeBackendError` for errors that would fail every request
(bad credentials, wrong URL or model name) and when no request at all got through.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import os
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..generation import (
    _answer_lengths,
    _encode_left_padded,
    _eos_ids,
    _input_device,
    _pad_id,
    _split_tokens,
    format_chat,
    split_reasoning,
)

__all__ = ["Completion", "JudgeBackend", "JudgeBackendError", "OpenAIChatBackend", "TransformersJudgeBackend"]

Conversation = Sequence[Mapping[str, str]]

# 4xx answers that concern one request only (too long, invalid content): not retried, reported per request.
_PER_REQUEST_4XX = frozenset({400, 413, 422})
# Retried: request timeout, rate limit; every 5xx is retried too.
_RETRYABLE_4XX = frozenset({408, 409, 425, 429})


class JudgeBackendError(RuntimeError):
    """A judge backend error that affects the whole run (credentials, URL, model name, endpoint down)."""


@dataclass
class Completion:
    """One judge-model output.

    Attributes:
        text: the final output (for reasoning models: the part after the reasoning), or ``None`` on failure.
        reasoning: the reasoning, when the backend returns it separately (``reasoning_content``) or the model
            wrote ``<think>...</think>``; else ``None``.
        error: what went wrong when ``text`` is ``None`` (after retries), else ``None``.
        attempts: number of requests made (1 = no retry).
    """

    text: str | None
    reasoning: str | None = None
    error: str | None = None
    attempts: int = 1


class JudgeBackend(ABC):
    """Runs a judge model on chat conversations."""

    @property
    def name(self) -> str:
        """Identifier of the judge model (part of :attr:`LLMJudge.name`)."""
        return type(self).__name__

    @abstractmethod
    def complete_many(self, conversations: Sequence[Conversation], max_tokens: int | None = None) -> list[Completion]:
        """Complete each conversation.

        Args:
            conversations: lists of ``{"role", "content"}`` messages.
            max_tokens: generation budget per completion; ``None`` uses the backend's default.

        Returns:
            One :class:`Completion` per conversation, in input order.
        """

    def complete(self, conversation: Conversation, max_tokens: int | None = None) -> Completion:
        """Complete one conversation."""
        return self.complete_many([conversation], max_tokens=max_tokens)[0]


class TransformersJudgeBackend(JudgeBackend):
    """A local transformers chat model as judge: greedy decoding, chat template, left-padded batches.

    Args:
        model: a causal LM (in ``eval()`` mode).
        tokenizer: its tokenizer (with a chat template; plain text is used otherwise).
        max_new_tokens: default generation budget per judgment.
        batch_size: conversations per ``generate`` call.
        chat_template_kwargs: extra template variables (e.g. ``{"enable_thinking": False}``).
        progress: show a tqdm bar.

    Output after a ``</think>`` marker is the text; what precedes it is the reasoning.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        max_new_tokens: int = 512,
        batch_size: int = 8,
        *,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        progress: bool = False,
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.progress = progress

    @property
    def name(self) -> str:
        config = getattr(self.model, "config", None)
        return f"transformers:{getattr(config, 'name_or_path', '') or type(self.model).__name__}"

    @torch.no_grad()
    def complete_many(self, conversations: Sequence[Conversation], max_tokens: int | None = None) -> list[Completion]:
        budget = max_tokens or self.max_new_tokens
        texts = format_chat(self.tokenizer, conversations, chat_template_kwargs=self.chat_template_kwargs)
        eos_ids = _eos_ids(self.model, self.tokenizer)
        pad_id = _pad_id(self.tokenizer, eos_ids)
        device = _input_device(self.model)
        completions: list[Completion] = []
        for start in tqdm(range(0, len(texts), self.batch_size), desc="judging", disable=not self.progress):
            input_ids, attention_mask = _encode_left_padded(
                self.tokenizer, texts[start : start + self.batch_size], pad_id, device
            )
            sequences = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                do_sample=False,
                max_new_tokens=budget,
                pad_token_id=pad_id,
                eos_token_id=eos_ids or None,
            )
            generated = sequences[:, input_ids.shape[1] :]
            lengths, finished = _answer_lengths(generated, eos_ids)
            for row in range(generated.shape[0]):
                ids = generated[row, : lengths[row]].tolist()
                content = ids[:-1] if finished[row] else ids
                reasoning, text, _ = _split_tokens(self.tokenizer, content, "</think>", None)
                completions.append(Completion(text=text, reasoning=reasoning))
        return completions


def _resolve_url(base_url: str) -> str:
    """The chat-completions URL for a base URL (``http://host:8000``, ``.../v1`` or the full endpoint)."""
    parsed = urllib.parse.urlsplit(base_url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"judge base URL must be an http(s) URL like 'http://localhost:8000/v1', got {base_url!r}")
    path = parsed.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path = (path or "/v1") + "/chat/completions"
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path, parsed.query, ""))


def _retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` header as seconds (delta-seconds or an HTTP date), or ``None``."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment is None:
        return None
    return max(0.0, moment.timestamp() - time.time())


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class _PerRequestError(Exception):
    pass


class OpenAIChatBackend(JudgeBackend):
    """A judge model behind an OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, llama.cpp, hosted APIs).

    Uses only the standard library (``urllib``), a thread pool for bounded concurrency, and per-request retries.

    Args:
        base_url: server URL, e.g. ``"http://localhost:8000/v1"`` (``/v1`` is added to a bare host, and a full
            ``.../chat/completions`` URL is used as is). Default: ``STEERING_JUDGE_BASE_URL``, then
            ``OPENAI_BASE_URL``, then ``https://api.openai.com/v1``.
        api_key: bearer token; default ``STEERING_JUDGE_API_KEY``, then ``OPENAI_API_KEY``; none is sent when unset
            (local servers).
        model: the served model name (e.g. ``"openai/gpt-oss-20b"``); default ``STEERING_JUDGE_MODEL``.
        max_concurrency: requests in flight at once.
        timeout: seconds per request (connect and each read).
        max_retries: retries after the first attempt, for timeouts, connection errors, HTTP 408/409/425/429 and 5xx,
            and malformed responses (not JSON, no ``choices``).
        backoff: base delay in seconds; attempt ``i`` waits ``backoff * 2**i`` plus up to ``backoff`` of jitter, at
            least the server's ``Retry-After``, at most ``max_backoff``.
        temperature: sampling temperature of the judge (0 = deterministic where the server allows).
        max_tokens: default generation budget per request (``None``: the server's default).
        max_backoff: cap on one wait, seconds.
        extra_body: extra JSON fields for every request (e.g. ``{"top_p": 1.0}``, ``{"reasoning_effort": "low"}``).
        progress: show a tqdm bar.

    Errors: HTTP 400/413/422 concern one request (e.g. too long) and come back as a failed :class:`Completion`
    without retry; any other 4xx (401, 403, 404, ...) raises :class:`JudgeBackendError` at once and cancels the
    remaining requests; so does a call in which every request failed for transport reasons (endpoint down).
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        *,
        max_concurrency: int = 4,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: float = 0.5,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        max_backoff: float = 60.0,
        extra_body: Mapping[str, Any] | None = None,
        progress: bool = False,
    ) -> None:
        base_url = (
            base_url
            or os.environ.get("STEERING_JUDGE_BASE_URL")
            or os.environ.get("OPENAI_BASE_URL")
            or "https://api.openai.com/v1"
        )
        model = model or os.environ.get("STEERING_JUDGE_MODEL")
        if not model:
            raise ValueError("no judge model name: pass model=... or set STEERING_JUDGE_MODEL")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if backoff < 0 or max_backoff < 0:
            raise ValueError(f"backoff and max_backoff must be >= 0, got {backoff} and {max_backoff}")
        self.url = _resolve_url(base_url)
        self.api_key = api_key or os.environ.get("STEERING_JUDGE_API_KEY") or os.environ.get("OPENAI_API_KEY")
        self.model = model
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_backoff = max_backoff
        self.extra_body = dict(extra_body or {})
        self.progress = progress
        self._random = random.Random(0)
        self._random_lock = threading.Lock()

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIChatBackend(url={self.url!r}, model={self.model!r}, max_concurrency={self.max_concurrency})"

    @property
    def name(self) -> str:
        return f"openai:{self.model}"

    def complete_many(self, conversations: Sequence[Conversation], max_tokens: int | None = None) -> list[Completion]:
        conversations = list(conversations)
        if not conversations:
            return []
        budget = max_tokens if max_tokens is not None else self.max_tokens
        results: list[Completion | None] = [None] * len(conversations)
        bar = tqdm(total=len(conversations), desc="judging", disable=not self.progress)
        abort = threading.Event()  # set on a fatal error: in-flight workers stop retrying
        executor = ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(conversations)))
        try:
            futures = {
                executor.submit(self._request_with_retries, conversation, budget, abort): index
                for index, conversation in enumerate(conversations)
            }
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    results[futures[future]] = future.result()  # re-raises JudgeBackendError
                    bar.update(1)
        except BaseException:
            abort.set()
            raise
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            bar.close()
        completed = [result for result in results if result is not None]
        transport_failures = [r for r in completed if r.text is None and r.error and r.error.startswith("transport:")]
        if transport_failures and len(transport_failures) == len(completed):
            raise JudgeBackendError(
                f"every request to {self.url} failed after {self.max_retries} retries; last error: "
                f"{transport_failures[-1].error}"
            )
        return completed

    # -- one request -------------------------------------------------------------------------------------------------

    def _payload(self, conversation: Conversation, max_tokens: int | None) -> bytes:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(message) for message in conversation],
            "temperature": self.temperature,
        }
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        body.update(self.extra_body)
        return json.dumps(body).encode("utf-8")

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        with self._random_lock:
            jitter = self._random.uniform(0.0, self.backoff)
        delay = self.backoff * (2**attempt) + jitter
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.max_backoff)

    def _request_with_retries(
        self, conversation: Conversation, max_tokens: int | None, abort: threading.Event
    ) -> Completion:
        payload = self._payload(conversation, max_tokens)
        error = ""
        for attempt in range(self.max_retries + 1):
            if abort.is_set():
                return Completion(text=None, error="cancelled: another request failed fatally", attempts=attempt)
            try:
                text, reasoning = self._request_once(payload)
                return Completion(text=text, reasoning=reasoning, attempts=attempt + 1)
            except _PerRequestError as exc:
                return Completion(text=None, error=str(exc), attempts=attempt + 1)
            except _Retryable as exc:
                error = str(exc)
                if attempt < self.max_retries:
                    abort.wait(self._delay(attempt, exc.retry_after))
        return Completion(text=None, error=error, attempts=self.max_retries + 1)

    def _request_once(self, payload: bytes) -> tuple[str, str | None]:
        request = urllib.request.Request(self.url, data=payload, headers=self._headers(), method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc)
            if exc.code in _RETRYABLE_4XX or exc.code >= 500:
                raise _Retryable(
                    f"transport: HTTP {exc.code} from {self.url}: {detail}",
                    _retry_after_seconds(exc.headers.get("Retry-After") if exc.headers else None),
                ) from None
            if exc.code in _PER_REQUEST_4XX:
                raise _PerRequestError(f"HTTP {exc.code} from {self.url} (not retried): {detail}") from None
            hint = {
                401: " (check the API key: STEERING_JUDGE_API_KEY / OPENAI_API_KEY)",
                403: " (the key is not allowed to use this model or endpoint)",
                404: f" (check the base URL and the model name {self.model!r})",
            }.get(exc.code, "")
            raise JudgeBackendError(f"HTTP {exc.code} from {self.url}{hint}: {detail}") from None
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            # urllib.error.URLError (connection refused, DNS), socket timeouts, resets, incomplete reads
            raise _Retryable(f"transport: {type(exc).__name__} talking to {self.url}: {exc}") from None
        return _parse_chat_response(body)


def _error_detail(exc: urllib.error.HTTPError) -> str:
    """The server's error message (OpenAI-style ``{"error": {"message": ...}}`` or the raw body), shortened."""
    try:
        text = exc.read().decode("utf-8", errors="replace")
    except Exception:  # noqa: BLE001 - the body only feeds the message
        text = ""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        message = data.get("error", data)
        if isinstance(message, dict):
            message = message.get("message", message)
        text = str(message)
    return (text.strip() or str(exc.reason or ""))[:500]


def _parse_chat_response(body: bytes) -> tuple[str, str | None]:
    """``(content, reasoning)`` of the first choice; raises ``_Retryable`` for a malformed response."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _Retryable(f"malformed response (not JSON): {body[:200]!r}") from None
    try:
        message = data["choices"][0]["message"]
        if not isinstance(message, dict):
            raise TypeError
    except (KeyError, IndexError, TypeError):
        raise _Retryable(f"malformed response (no choices[0].message): {str(data)[:200]}") from None
    content = message.get("content") or ""
    reasoning = message.get("reasoning_content") or message.get("reasoning") or None
    if not isinstance(content, str):
        raise _Retryable(f"malformed response (content is {type(content).__name__})")
    if reasoning is None and "</think>" in content:
        reasoning, content = split_reasoning(content)
    return content, reasoning if isinstance(reasoning, str) else None
