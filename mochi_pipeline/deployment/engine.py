"""Batched decoding for concurrent requests: one llama.cpp context, one sequence per slot, one decode per step.

Requests wait in a queue; a scheduler thread admits them into free slots (sequence ids), feeds
their prompts in, then decodes one token for every active sequence per ``llama_decode`` call, so
eight clients cost about one decode each step instead of eight. Each request samples on its own
(greedy, or temperature / top-k / top-p from its own seeded generator) and gets its text as it is
decoded. Scoring requests (per-token log-probabilities of a continuation) ride the same batches.
The KV cache is shared by the slots (``kv_unified``): each slot may use ``n_ctx`` tokens.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np


class ContextLengthError(ValueError):
    """A prompt that does not fit the context window (with room for one generated token)."""

    def __init__(self, n_tokens: int, n_ctx: int) -> None:
        super().__init__(f"This model's context is {n_ctx} tokens; the request has {n_tokens} prompt tokens and needs "
                         "room for at least one more. Shorten the prompt or start the server with a larger n_ctx.")
        self.n_tokens, self.n_ctx = n_tokens, n_ctx


@dataclass
class Sampling:
    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: Sequence[str] = ()


@dataclass
class _Job:
    tokens: list[int]
    sampling: Sampling
    score_from: int = -1  # >= 0: a scoring job: log-probs of tokens[score_from:], nothing generated
    events: queue.Queue = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    # scheduler state
    fed: int = 0
    sent: int = 0  # characters of text already handed out
    text_bytes: bytearray = field(default_factory=bytearray)  # the generated tokens' bytes so far
    generated: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    rng: np.random.Generator | None = None


@dataclass
class Generation:
    """What a finished generation returns (the text pieces were also yielded as they came)."""

    text: str = ""
    finish_reason: str = "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0


class BatchEngine:
    def __init__(self, llm, slots: int = 4, n_ctx: int = 0, n_batch: int = 512) -> None:
        import llama_cpp
        from llama_cpp import _internals

        self.llm, self.slots = llm, slots
        self.n_ctx = n_ctx or llm.n_ctx()
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.n_ctx * slots
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = slots
        params.kv_unified = True
        params.n_threads = params.n_threads_batch = llm.context_params.n_threads
        from llama_cpp._utils import suppress_stdout_stderr

        # Slots share one KV cache of n_ctx * slots cells; llama.cpp warns that this exceeds the training
        # context, but each sequence is kept within n_ctx (check_fits).
        with suppress_stdout_stderr(disable=False):
            self.ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        self.vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.n_batch = n_batch
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._llama_cpp = llama_cpp
        self.waiting: queue.Queue[_Job] = queue.Queue()
        self.active: dict[int, _Job] = {}
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="mochi-batch-engine", daemon=True)
        self.thread.start()

    # --- public --------------------------------------------------------------------------------

    def check_fits(self, n_tokens: int) -> None:
        if n_tokens + 1 > self.n_ctx:
            raise ContextLengthError(n_tokens, self.n_ctx)

    def generate(self, tokens: list[int], sampling: Sampling) -> Iterator[str | Generation]:
        """Yield text pieces as they are decoded, then one ``Generation``. Closing the iterator frees the slot."""
        self.check_fits(len(tokens))
        budget = min(sampling.max_tokens, self.n_ctx - len(tokens))
        job = _Job(tokens=list(tokens), sampling=Sampling(**{**sampling.__dict__, "max_tokens": budget}))
        if sampling.temperature > 0:
            job.rng = np.random.default_rng(sampling.seed)
        self.waiting.put(job)
        return self._stream(job)

    def complete(self, tokens: list[int], sampling: Sampling) -> Generation:
        result = Generation()
        for item in self.generate(tokens, sampling):
            if isinstance(item, Generation):
                result = item
        return result

    def score(self, tokens: list[int], start: int) -> list[float]:
        """Natural-log probability of each of ``tokens[start:]`` given the tokens before it (``start`` >= 1)."""
        if start < 1 or start > len(tokens):
            raise ValueError("score needs at least one context token (BOS) before the scored ones.")
        self.check_fits(len(tokens) - 1)
        job = _Job(tokens=list(tokens), sampling=Sampling(max_tokens=0), score_from=start)
        self.waiting.put(job)
        kind, value = job.events.get()
        if kind == "error":
            raise value
        return value

    def close(self) -> None:
        self.closed.set()
        self.waiting.put(_Job(tokens=[], sampling=Sampling()))  # wake the scheduler
        self.thread.join(timeout=10)
        self._llama_cpp.llama_batch_free(self.batch)
        self.ctx.close()

    # --- the scheduler -------------------------------------------------------------------------

    def _stream(self, job: _Job) -> Iterator[str | Generation]:
        try:
            while True:
                kind, value = job.events.get()
                if kind == "error":
                    raise value
                yield value
                if kind == "done":
                    return
        finally:
            job.cancelled.set()

    def _admit(self) -> None:
        block = not self.active
        while len(self.active) < self.slots:
            try:
                job = self.waiting.get(block=block, timeout=None)
            except queue.Empty:
                return
            block = False
            if self.closed.is_set():
                return
            if not job.tokens:
                continue
            slot = next(s for s in range(self.slots) if s not in self.active)
            self._llama_cpp.llama_memory_seq_rm(self.ctx.memory, slot, -1, -1)
            self.active[slot] = job

    def _loop(self) -> None:
        while not self.closed.is_set():
            self._admit()
            if self.closed.is_set():
                break
            for slot in [s for s, j in self.active.items() if j.cancelled.is_set()]:
                self._release(slot)
            if not self.active:
                continue
            try:
                self._step()
            except Exception as err:  # a failed decode fails its requests, not the server
                for slot, job in list(self.active.items()):
                    job.events.put(("error", RuntimeError(f"llama.cpp decode failed: {err}")))
                    self._release(slot)

    def _step(self) -> None:
        """One llama_decode over every active slot: prompt tokens not yet fed, else the last sampled token."""
        b = self.batch
        entries: list[tuple[int, int, bool]] = []  # (slot, position, wants logits)
        n = 0
        for slot, job in self.active.items():
            if n == self.n_batch:
                break
            if job.fed < len(job.tokens):  # prompt (or scored text) still going in
                take = min(len(job.tokens) - job.fed, self.n_batch - n)
                for pos in range(job.fed, job.fed + take):
                    last = pos == len(job.tokens) - 1
                    wants = (job.score_from >= 0 and job.score_from - 1 <= pos < len(job.tokens) - 1) or (
                        job.score_from < 0 and last)
                    self._put(n, job.tokens[pos], pos, slot, wants)
                    entries.append((slot, pos, wants))
                    n += 1
                job.fed += take
            elif job.score_from < 0:
                pos = len(job.tokens) + len(job.generated) - 1
                self._put(n, job.generated[-1], pos, slot, True)
                entries.append((slot, pos, True))
                n += 1
        b.n_tokens = n
        rc = self._llama_cpp.llama_decode(self.ctx.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        finished: list[int] = []
        for i, (slot, pos, wants) in enumerate(entries):
            if not wants:
                continue
            job = self.active[slot]
            logits = np.ctypeslib.as_array(self._llama_cpp.llama_get_logits_ith(self.ctx.ctx, i),
                                           shape=(self.n_vocab,))
            if job.score_from >= 0:
                nxt = job.tokens[pos + 1]
                job.logprobs.append(float(logits[nxt] - _logsumexp(logits)))
                if pos + 1 == len(job.tokens) - 1:
                    job.events.put(("scores", job.logprobs))
                    finished.append(slot)
            elif job.fed >= len(job.tokens) and self._sampled(job, logits):
                finished.append(slot)
        for slot in finished:
            self._release(slot)

    def _put(self, i: int, token: int, pos: int, slot: int, logits: bool) -> None:
        b = self.batch
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = slot
        b.logits[i] = logits

    def _sampled(self, job: _Job, logits: np.ndarray) -> bool:
        """Sample the next token of ``job``; True when it is finished."""
        token = _sample(logits, job.sampling, job.rng)
        if self._llama_cpp.llama_vocab_is_eog(self.vocab, token):
            self._finish(job, "stop")
            return True
        job.generated.append(token)
        job.text_bytes += self.llm.detokenize([token])
        text = job.text_bytes.decode("utf-8", errors="replace")
        stop_at = min((i for s in job.sampling.stop if (i := text.find(s)) >= 0), default=-1)
        if stop_at >= 0:
            self._emit(job, text[:stop_at])
            self._finish(job, "stop", text[:stop_at])
            return True
        # Hold back what could still become a stop string, and an incomplete UTF-8 character.
        hold = max((len(s) - 1 for s in job.sampling.stop), default=0)
        safe = text[: len(text) - hold] if hold else text
        if safe.endswith("\ufffd"):
            safe = safe[:-1]
        self._emit(job, safe)
        if len(job.generated) >= job.sampling.max_tokens:
            self._emit(job, text)
            self._finish(job, "length", text)
            return True
        return False

    def _emit(self, job: _Job, upto: str) -> None:
        if len(upto) > job.sent:
            job.events.put(("piece", upto[job.sent:]))
            job.sent = len(upto)

    def _finish(self, job: _Job, reason: str, text: str | None = None) -> None:
        text = job.text_bytes.decode("utf-8", errors="replace") if text is None else text
        self._emit(job, text)
        job.events.put(("done", Generation(text=text, finish_reason=reason, prompt_tokens=len(job.tokens),
                                           completion_tokens=len(job.generated))))

    def _release(self, slot: int) -> None:
        self._llama_cpp.llama_memory_seq_rm(self.ctx.memory, slot, -1, -1)
        del self.active[slot]


def _logsumexp(x: np.ndarray) -> float:
    m = float(x.max())
    return m + float(np.log(np.exp(x - m).sum()))


def _sample(logits: np.ndarray, s: Sampling, rng: np.random.Generator | None) -> int:
    if s.temperature <= 0 or rng is None:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / s.temperature
    order = np.argsort(-z)
    if s.top_k > 0:
        order = order[: s.top_k]
    p = np.exp(z[order] - z[order[0]])
    p /= p.sum()
    if s.top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(p), s.top_p) + 1)
        order, p = order[:keep], p[:keep] / p[:keep].sum()
    return int(order[rng.choice(len(order), p=p)])

