"""The question/answer writer: one resource interface, an HTTP back-end and an offline one.

``QALLM`` is what the ``qa_pairs`` asset asks. ``OpenAICompatibleQA`` talks to any server speaking
OpenAI's ``/v1/chat/completions`` (vLLM, llama.cpp server, Ollama, OpenAI itself) with timeouts,
retries, a concurrency limit and an on-disk reply cache; ``OfflineQA`` needs no model at all.
``data_generation.assets.qa_writer`` picks one from ``generation.qa`` when the code location loads.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import re
import threading
import time
from abc import abstractmethod
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg
import httpx
from pydantic import Field

from mochi_pipeline.data_generation.qa_generator import QABatch, QAPair, QASubject, offline_pairs
from mochi_pipeline.data_generation.settings import QASettings
from mochi_pipeline.storage import atomic_write_text, content_hash

SYSTEM_PROMPT = (
    "You write question/answer pairs that teach a developer about one code repository. "
    'Reply with JSON only, in the form {"pairs": [{"question": "...", "answer": "..."}]}. '
    "Every answer must follow from the material given; quote identifiers in backticks."
)


class QAEndpointError(RuntimeError):
    """The endpoint cannot be used at all (refused key, nothing reachable): worded for the person fixing it.

    ``retryable``: whether trying again later can help (nothing reachable), or only a fix can (a refused key).
    """

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class MalformedReply(ValueError):
    pass


class RequestFailed(RuntimeError):
    def __init__(self, reason: str, auth: bool = False):
        super().__init__(reason)
        self.auth = auth


class QALLM(dg.ConfigurableResource):
    """Writes question/answer pairs about code symbols."""

    @abstractmethod
    def ask(
        self, subjects: list[QASubject], *, pairs_per_subject: int, cache_dir: Path, log: logging.Logger
    ) -> QABatch:
        """Pairs for each subject; failures are counted in ``QABatch.outcomes``, never raised per subject."""


class OfflineQA(QALLM):
    """Template questions answered from signatures, docstrings and tests: no model, fully deterministic."""

    def ask(
        self, subjects: list[QASubject], *, pairs_per_subject: int, cache_dir: Path, log: logging.Logger
    ) -> QABatch:
        batch = QABatch()
        for subject in subjects:
            found = offline_pairs(subject)
            batch.pairs += [QAPair(subject, q, a) for q, a in found]
            batch.outcomes["answered" if found else "nothing_to_ask"] += 1
        return batch


def user_prompt(subject: QASubject, pairs_per_subject: int) -> str:
    parts = [f"File `{subject.path}` ({subject.language}) defines `{subject.name}`:\n```\n{subject.code.strip()}\n```"]
    if subject.docs:
        parts.append("Documentation naming it:\n" + "\n---\n".join(subject.docs))
    for path, code in subject.tests:
        parts.append(f"A test in `{path}` using it:\n```\n{code.strip()}\n```")
    parts.append(
        f"Write {pairs_per_subject} question/answer pairs a developer of this project would ask about `{subject.name}`."
    )
    return "\n\n".join(parts)


def parse_pairs(content: str) -> list[tuple[str, str]]:
    """The (question, answer) pairs in a model reply; raises MalformedReply saying what is wrong."""
    text = content.strip()
    fenced = re.match(r"^```(?:json)?\s*\n(.*?)\n```$", text, re.S)
    if fenced:
        text = fenced.group(1)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise MalformedReply(f"reply is not JSON ({err.msg} at character {err.pos})") from None
    items = data.get("pairs") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise MalformedReply('reply has no "pairs" list')
    pairs = [
        (item["question"].strip(), item["answer"].strip())
        for item in items
        if isinstance(item, dict)
        and isinstance(item.get("question"), str)
        and isinstance(item.get("answer"), str)
        and item["question"].strip()
        and item["answer"].strip()
    ]
    if not pairs:
        raise MalformedReply("reply holds no pair with a non-empty question and answer")
    return pairs


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds (it may be a number or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # unreadable: fall back to exponential backoff
    return max(0.0, when.timestamp() - time.time())


class OpenAICompatibleQA(QALLM):
    """Asks an OpenAI-compatible chat-completions endpoint; replies are cached on disk by (model, prompt)."""

    base_url: str = Field(description="Endpoint root, e.g. http://localhost:8000/v1 ('/v1' is added when missing).")
    model: str = Field("", description="Model name sent with each request.")
    api_key: str = Field("", description="API key; pass dg.EnvVar('NAME') to read it from the environment at run time.")
    api_key_env: str = Field(
        "MOCHI_QA_API_KEY", description="Environment variable read at run time when api_key is ''."
    )
    timeout_s: float = Field(60.0, gt=0, description="Timeout of one request.")
    max_retries: int = Field(4, ge=0, description="Retries on 429, 5xx, timeouts and connection errors.")
    concurrency: int = Field(4, ge=1, description="Requests in flight at once.")
    backoff_s: float = Field(
        1.0, ge=0, description="First retry delay, doubled per attempt; Retry-After wins when sent."
    )
    max_backoff_s: float = Field(60.0, ge=0, description="Cap of one retry delay.")
    temperature: float = Field(0.2, ge=0, le=2)
    max_tokens: int = Field(512, ge=16)

    @classmethod
    def from_settings(cls, settings: QASettings) -> OpenAICompatibleQA:
        return cls(
            base_url=settings.base_url,
            model=settings.model,
            api_key_env=settings.api_key_env,
            timeout_s=settings.timeout_s,
            max_retries=settings.max_retries,
            concurrency=settings.concurrency,
            backoff_s=settings.backoff_s,
            max_backoff_s=settings.max_backoff_s,
            temperature=settings.temperature,
            max_tokens=settings.max_tokens,
        )

    @property
    def url(self) -> str:
        root = self.base_url.rstrip("/")
        return (root if root.endswith("/v1") else root + "/v1") + "/chat/completions"

    def ask(
        self, subjects: list[QASubject], *, pairs_per_subject: int, cache_dir: Path, log: logging.Logger
    ) -> QABatch:
        key = self.api_key or os.environ.get(self.api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        batch = QABatch()
        lock = threading.Lock()
        last_failure: list[str] = []

        def one(client: httpx.Client, subject: QASubject) -> None:
            messages = [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": user_prompt(subject, pairs_per_subject)},
            ]
            cache_file = cache_dir / f"{content_hash(self.model, json.dumps(messages, sort_keys=True))}.json"
            pairs: list[tuple[str, str]] = []
            content = _cached_content(cache_file)
            outcome = "cached" if content is not None else "answered"
            try:
                if content is None:
                    content = self._complete(client, messages)
                pairs = parse_pairs(content)
                if outcome == "answered":  # only replies that parse are kept: a malformed one is asked again next run
                    atomic_write_text(cache_file, json.dumps({"model": self.model, "content": content}))
            except MalformedReply as err:
                outcome = "malformed_reply"
                log.warning(f"QA reply about `{subject.name}` ({subject.path}) is malformed: {err}; skipped.")
            except RequestFailed as err:
                outcome = "auth_refused" if err.auth else "request_failed"
                last_failure.append(str(err))
                log.warning(f"QA request about `{subject.name}` failed: {err}; skipped.")
            with lock:
                batch.outcomes[outcome] += 1
                batch.pairs += [QAPair(subject, q, a) for q, a in pairs[:pairs_per_subject]]

        with (
            httpx.Client(timeout=self.timeout_s, headers=headers) as client,
            ThreadPoolExecutor(self.concurrency) as pool,
        ):
            for future in [pool.submit(one, client, s) for s in subjects]:
                future.result()
        batch.pairs.sort(key=lambda p: (p.subject.path, p.subject.name, p.question))
        if batch.outcomes["auth_refused"]:
            raise QAEndpointError(
                f"{self.url} refused the API key ({last_failure[-1]}). Set the environment variable "
                f"{self.api_key_env} (generation.qa.api_key_env) to a valid key, or set generation.qa.base_url: '' "
                "to use the offline generator."
            )
        if subjects and batch.outcomes["request_failed"] == len(subjects):
            raise QAEndpointError(
                f"Every request to {self.url} failed (last: {last_failure[-1]}). Check generation.qa.base_url and "
                "that the server is running, or set it to '' to use the offline generator. Replies already received "
                "are cached.",
                retryable=True,
            )
        return batch

    def _complete(self, client: httpx.Client, messages: list[dict]) -> str:
        payload = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }
        reason = ""
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                response = client.post(self.url, json=payload)
            except httpx.TransportError as err:  # timeouts and connection errors
                reason = f"{type(err).__name__}: {err}"
            else:
                if response.status_code == 200:
                    return _reply_content(response)
                reason = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code in (401, 403):
                    raise RequestFailed(reason, auth=True)
                if response.status_code != 429 and response.status_code < 500:
                    raise RequestFailed(reason)
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            if attempt < self.max_retries:
                delay = retry_after if retry_after is not None else self.backoff_s * 2**attempt
                time.sleep(min(delay, self.max_backoff_s))
        raise RequestFailed(f"{reason} (after {self.max_retries + 1} attempts)")


def _cached_content(path: Path) -> str | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))["content"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent or unreadable: ask again


def _reply_content(response: httpx.Response) -> str:
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise MalformedReply(f"response is not a chat completion with choices: {response.text[:200]!r}") from None
    if not isinstance(content, str):
        raise MalformedReply("choices[0].message.content is not a string")
    return content
