"""Where a judge model runs: a local transformers model, or any OpenAI-compatible chat-completions endpoint.

A backend turns chat conversations into completions, in input order. It never raises for one bad request: a request
that still fails after its retries comes back as ``Completion(text=None, error=...)``, which the judge turns into an
unparseable judgment (label 0). It raises :class:`JudgeBackendError` for errors that would fail every request
(bad credentials, wrong URL or model name) and when no request at all got through.
"""

from __future__ import annotations

import ipaddress
import json
import os
import threading
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from steering_adapter.measure.sampling.answers import answer_lengths, split_answer_tokens, split_reasoning
from steering_adapter.measure.sampling.prompt_encoding import (
    encode_texts,
    format_chat,
    input_device,
    pad_batch,
    padding_id,
    stop_token_ids,
)

__all__ = ["Completion", "JudgeBackend", "JudgeBackendError", "OpenAIChatBackend", "TransformersJudgeBackend"]

Conversation = Sequence[Mapping[str, str]]

# 4xx answers that concern one request only (too long, invalid content): not retried, reported per request.
_PER_REQUEST_4XX = frozenset({400, 413, 422})
# Answers the openai client retries itself (with its backoff and the server's Retry-After); after its last retry they
# are a failed request, not a configuration error.
_TRANSIENT_4XX = frozenset({408, 409, 425, 429})
# The only headers that leave this process: what HTTP and the openai client need (its own metadata is in the
# ``x-stainless-`` namespace, and it reads some of it back from the request). Everything else it may pick up from the
# environment (OPENAI_API_KEY, OPENAI_ORG_ID, OPENAI_PROJECT_ID, OPENAI_CUSTOM_HEADERS, .netrc) is dropped before the
# request is sent; ``Authorization`` is set only from the key this backend was given.
_WIRE_HEADERS = frozenset(
    ("host", "accept", "accept-encoding", "connection", "content-type", "content-length", "user-agent")
    + ("idempotency-key",)
)
_SDK_HEADER_PREFIX = "x-stainless-"


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
        eos_ids = stop_token_ids(self.model, self.tokenizer)
        pad_id = padding_id(self.tokenizer, eos_ids)
        device = input_device(self.model)
        completions: list[Completion] = []
        for start in tqdm(range(0, len(texts), self.batch_size), desc="judging", disable=not self.progress):
            batch = encode_texts(self.tokenizer, texts[start : start + self.batch_size])
            input_ids, attention_mask = pad_batch(batch, pad_id, device=device)
            sequences = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                do_sample=False,
                max_new_tokens=budget,
                pad_token_id=pad_id,
                eos_token_id=eos_ids or None,
            )
            generated = sequences[:, input_ids.shape[1] :]
            lengths, finished = answer_lengths(generated, eos_ids)
            for row in range(generated.shape[0]):
                ids = generated[row, : lengths[row]].tolist()
                content = ids[:-1] if finished[row] else ids
                reasoning, text, _ = split_answer_tokens(self.tokenizer, content, "</think>", None)
                completions.append(Completion(text=text, reasoning=reasoning))
        return completions


def _resolve_base_url(base_url: str) -> str:
    """The API base URL (``.../v1``) for a bare host, a ``/v1`` URL or a full ``.../chat/completions`` URL."""
    parsed = urllib.parse.urlsplit(base_url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"judge base URL must be an http(s) URL like 'http://localhost:8000/v1', got {base_url!r}")
    path = parsed.path.rstrip("/").removesuffix("/chat/completions")
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path or "/v1", parsed.query, ""))


def is_loopback_host(host: str | None) -> bool:
    """Whether ``host`` (a URL's host name) is this machine: ``localhost`` or a loopback address."""
    if not host:
        return False
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_api_key(api_key: str | None, api_key_env: str | None, base_url: str) -> str | None:
    """The key a judge backend may send, and only when the caller named it.

    Args:
        api_key: an explicit key.
        api_key_env: the name of an environment variable holding the key (e.g. a recipe's ``judge.api_key_env``).
        base_url: where the key would be sent.

    Returns:
        The key, or ``None`` when neither argument names one (no global such as ``OPENAI_API_KEY`` is ever read).

    Raises:
        ValueError: both given, the named variable unset or empty, or a key over plain ``http://`` to a host that
            is not this machine (it would cross the network in clear text).
    """
    if api_key is not None and api_key_env is not None:
        raise ValueError("give the judge API key directly (api_key) or by variable name (api_key_env), not both")
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise ValueError(f"the judge API key variable {api_key_env!r} is not set (or empty)")
    if not api_key:
        return None
    parsed = urllib.parse.urlsplit(base_url)
    if parsed.scheme != "https" and not is_loopback_host(parsed.hostname):
        raise ValueError(
            f"refusing to send the judge API key over plain {parsed.scheme}:// to {parsed.hostname!r}: use https, "
            "or a server on this machine (localhost / 127.0.0.1)"
        )
    return api_key


class _Malformed(Exception):
    """A 200 answer without a usable chat completion (not JSON, no ``choices[0].message``)."""


class OpenAIChatBackend(JudgeBackend):
    """A judge model behind an OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, llama.cpp, hosted APIs).

    Requests go through the official ``openai`` client (connection pooling, timeouts, retries with exponential
    backoff that honours ``Retry-After``); a thread pool keeps ``max_concurrency`` requests in flight. What stays
    here is this project's own classification of failures (below) and the key policy.

    Args:
        base_url: server URL, e.g. ``"http://localhost:8000/v1"`` (``/v1`` is added to a bare host, and a full
            ``.../chat/completions`` URL is accepted). Default: ``STEERING_JUDGE_BASE_URL``, else
            ``https://api.openai.com/v1``.
        api_key: the bearer token, given explicitly.
        model: the served model name (e.g. ``"openai/gpt-oss-20b"``); default ``STEERING_JUDGE_MODEL``.
        api_key_env: or the *name* of the environment variable that holds the token (a recipe's
            ``judge.api_key_env``). With neither, no ``Authorization`` header is sent: no global variable such as
            ``OPENAI_API_KEY`` is ever read, and only protocol headers leave the process (``OPENAI_ORG_ID``,
            ``OPENAI_CUSTOM_HEADERS``, ``.netrc`` are dropped).
        max_concurrency: requests in flight at once.
        timeout: seconds per request attempt.
        max_retries: retries after the first attempt, for timeouts, dropped connections, HTTP 408/409/425/429 and
            5xx (the openai client's backoff: 0.5 s doubling up to 8 s, or the server's ``Retry-After`` up to two
            minutes), and separately for malformed answers (not JSON, no ``choices``).
        temperature: sampling temperature of the judge (0 = deterministic where the server allows).
        max_tokens: default generation budget per request (``None``: the server's default).
        extra_body: extra JSON fields for every request (e.g. ``{"top_p": 1.0}``, ``{"reasoning_effort": "low"}``).
        progress: show a tqdm bar.

    Errors: HTTP 400/413/422 concern one request (e.g. too long) and come back as a failed :class:`Completion`
    without retry; any other 4xx (401, 403, 404, ...) or a redirect raises :class:`JudgeBackendError` at once and
    cancels the requests not yet started; so does a call in which every request failed for transport reasons
    (endpoint down). A key over plain ``http://`` to another machine is refused (``ValueError``).
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        *,
        api_key_env: str | None = None,
        max_concurrency: int = 4,
        timeout: float = 60.0,
        max_retries: int = 5,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        extra_body: Mapping[str, Any] | None = None,
        progress: bool = False,
    ) -> None:
        import openai  # lazy: openai takes a second to import; only the endpoint judge needs it

        base_url = base_url or os.environ.get("STEERING_JUDGE_BASE_URL") or "https://api.openai.com/v1"
        model = model or os.environ.get("STEERING_JUDGE_MODEL")
        if not model:
            raise ValueError("no judge model name: pass model=... or set STEERING_JUDGE_MODEL")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.base_url = _resolve_base_url(base_url)
        self.url = self.base_url + "/chat/completions"
        self._api_key = resolve_api_key(api_key, api_key_env, self.base_url)
        self._origin = urllib.parse.urlsplit(self.base_url)[:2]
        self.model = model
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.extra_body = dict(extra_body or {})
        self.progress = progress
        http_client = openai.DefaultHttpxClient(
            follow_redirects=False,  # a redirect would carry the request (and key) elsewhere: it is an error
            event_hooks={"request": [self._only_own_headers]},
        )
        # The client insists on some credential; the placeholder never reaches the wire (see _only_own_headers).
        self._client = openai.OpenAI(
            api_key=self._api_key or "no-key",
            base_url=self.base_url,
            timeout=timeout,
            max_retries=max_retries,
            http_client=http_client,
        )

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIChatBackend(url={self.url!r}, model={self.model!r}, max_concurrency={self.max_concurrency})"

    @property
    def name(self) -> str:
        return f"openai:{self.model}"

    def _only_own_headers(self, request: Any) -> None:
        """Last step before the wire: protocol headers only, and ``Authorization`` only with our key, to our host."""
        for header in list(request.headers.keys()):
            if header.lower() not in _WIRE_HEADERS and not header.lower().startswith(_SDK_HEADER_PREFIX):
                del request.headers[header]
        if self._api_key and (request.url.scheme, request.url.netloc.decode("ascii")) == self._origin:
            request.headers["Authorization"] = f"Bearer {self._api_key}"

    def complete_many(self, conversations: Sequence[Conversation], max_tokens: int | None = None) -> list[Completion]:
        conversations = list(conversations)
        if not conversations:
            return []
        budget = max_tokens if max_tokens is not None else self.max_tokens
        results: list[Completion | None] = [None] * len(conversations)
        bar = tqdm(total=len(conversations), desc="judging", disable=not self.progress)
        abort = threading.Event()  # set on a fatal error: requests not yet started return at once
        executor = ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(conversations)))
        try:
            futures = {
                executor.submit(self._complete_one, conversation, budget, abort): index
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

    def _complete_one(self, conversation: Conversation, max_tokens: int | None, abort: threading.Event) -> Completion:
        """One conversation: the openai client retries transport failures; malformed answers are retried here."""
        import openai  # lazy: openai takes a second to import; only the endpoint judge needs it

        attempts = 0
        error = ""
        for _ in range(self.max_retries + 1):
            if abort.is_set():
                return Completion(text=None, error="cancelled: another request failed fatally", attempts=attempts)
            try:
                raw = self._client.chat.completions.with_raw_response.create(
                    model=self.model,
                    messages=[dict(message) for message in conversation],
                    temperature=self.temperature,
                    **({"max_tokens": max_tokens} if max_tokens is not None else {}),
                    extra_body=self.extra_body or None,
                )
            except openai.APIStatusError as exc:
                attempts += self.max_retries + 1 if _transient(exc.status_code) else 1
                detail = _error_detail(exc)
                if exc.status_code in _PER_REQUEST_4XX:
                    message = f"HTTP {exc.status_code} from {self.url} (not retried): {detail}"
                    return Completion(text=None, error=message, attempts=attempts)
                if _transient(exc.status_code):
                    message = f"transport: HTTP {exc.status_code} from {self.url}: {detail}"
                    return Completion(text=None, error=message, attempts=attempts)
                hint = self._hint(exc.status_code)
                raise JudgeBackendError(f"HTTP {exc.status_code} from {self.url}{hint}: {detail}") from None
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                attempts += self.max_retries + 1
                cause = exc.__cause__ or exc
                message = f"transport: {type(cause).__name__} talking to {self.url}: {cause}"
                return Completion(text=None, error=message, attempts=attempts)
            attempts += raw.retries_taken + 1
            try:
                text, reasoning = _parse_chat_response(raw.content)
            except _Malformed as exc:
                error = str(exc)
                continue
            return Completion(text=text, reasoning=reasoning, attempts=attempts)
        return Completion(text=None, error=error, attempts=attempts)

    def _hint(self, status: int) -> str:
        if 300 <= status < 400:
            return " (a redirect: give the final URL of the endpoint as base_url)"
        return {
            401: " (check the API key named by api_key / api_key_env, e.g. recipe judge.api_key_env)",
            403: " (the key is not allowed to use this model or endpoint)",
            404: f" (check the base URL and the model name {self.model!r})",
        }.get(status, "")


def _transient(status: int) -> bool:
    """Statuses the openai client retries (so a raised one has used up every retry)."""
    return status in _TRANSIENT_4XX or status >= 500


def _error_detail(exc: Any) -> str:
    """The server's error message (OpenAI-style ``{"error": {"message": ...}}`` or the raw body), shortened."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        message = body.get("error", body)
        if isinstance(message, dict):
            message = message.get("message", message)
        text = str(message)
    else:
        try:
            text = exc.response.text
        except Exception:  # noqa: BLE001 - the body only feeds the message
            text = ""
    return (text.strip() or str(exc))[:500]


def _parse_chat_response(body: bytes) -> tuple[str, str | None]:
    """``(content, reasoning)`` of the first choice; raises ``_Malformed`` for a malformed response."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _Malformed(f"malformed response (not JSON): {body[:200]!r}") from None
    try:
        message = data["choices"][0]["message"]
        if not isinstance(message, dict):
            raise TypeError
    except (KeyError, IndexError, TypeError):
        raise _Malformed(f"malformed response (no choices[0].message): {str(data)[:200]}") from None
    content = message.get("content") or ""
    reasoning = message.get("reasoning_content") or message.get("reasoning") or None
    if not isinstance(content, str):
        raise _Malformed(f"malformed response (content is {type(content).__name__})")
    if reasoning is None and "</think>" in content:
        reasoning, content = split_reasoning(content)
    return content, reasoning if isinstance(reasoning, str) else None
