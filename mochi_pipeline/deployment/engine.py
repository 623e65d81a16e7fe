"""Batched decoding for concurrent requests: one llama.cpp context, one sequence per slot, one decode per step.

Requests wait in a queue; a scheduler thread admits them into free slots (sequence ids), feeds
their prompts in, then decodes one token for every active sequence per ``llama_decode`` call, so
eight clients cost about one decode each step instead of eight. Each step puts the generating
slots' next tokens first and fills the rest of the batch with prompt tokens of newly admitted
requests (chunked prefill), so a long prompt does not stall the others.

Each request samples on its own (greedy at temperature 0, else temperature / top-k / top-p / min-p
from its own generator seeded by the request), so its text does not depend on what else runs.
Scoring requests (per-token log-probabilities of a continuation) ride the same batches. Each slot
has its own ``n_ctx`` cells of the KV cache (not ``kv_unified``), which a request never exceeds.
A finished request leaves its prompt in its slot's cache: the next request goes to the free slot
sharing the longest prefix with it and reads only the rest (as llama.cpp's server ``cache_prompt``),
so ranking k candidates after one prompt reads that prompt once, not k times.

A request is a ``Stream``: iterate it (or ``await stream.next()`` in an event loop) for text pieces
and then one ``Generation``; ``cancel()`` (or closing the iterator) ends it and frees its slot at the
next step, which is how a disconnected client stops costing decode time.
"""

from __future__ import annotations

import asyncio
import ctypes
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


class ContextLengthError(ValueError):
    """A prompt that does not fit the context window (with room for one generated token)."""

    def __init__(self, n_tokens: int, n_ctx: int) -> None:
        super().__init__(f"This model's maximum context length is {n_ctx} tokens, but the request has {n_tokens} "
                         f"prompt tokens and needs room for at least one more (a context of {n_ctx}). Shorten the "
                         "prompt or start the server with a larger context (export.n_ctx in mochi.yaml).")
        self.n_tokens, self.n_ctx = n_tokens, n_ctx


class EngineClosed(RuntimeError):
    """The engine was shut down while the request was waiting or running."""


@dataclass
class Sampling:
    """How one request picks its tokens. Temperature 0 is greedy (argmax, as llama.cpp's greedy sampler)."""

    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: Sequence[str] = ()


@dataclass
class Generation:
    """What a finished generation returns (its text pieces were also yielded as they came)."""

    text: str = ""
    finish_reason: str = "length"  # OpenAI's: "stop" (end of generation token or a stop string) or "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stop_word: str | None = None  # the stop string that ended it, if one did
    prompt_ms: float = 0.0  # from submission until the prompt was read (waiting for a slot included)
    predicted_ms: float = 0.0  # from then until the end

    @property
    def timings(self) -> dict:
        """llama.cpp's ``timings`` object."""
        def rate(n: int, ms: float) -> float | None:
            return round(n / ms * 1000, 2) if ms > 0 else None

        return {"prompt_n": self.prompt_tokens, "prompt_ms": round(self.prompt_ms, 3),
                "prompt_per_second": rate(self.prompt_tokens, self.prompt_ms),
                "predicted_n": self.completion_tokens, "predicted_ms": round(self.predicted_ms, 3),
                "predicted_per_second": rate(self.completion_tokens, self.predicted_ms)}

    @property
    def stop_type(self) -> str:
        """llama.cpp's name for the reason: "eos", "word" or "limit"."""
        return "word" if self.stop_word is not None else "eos" if self.finish_reason == "stop" else "limit"


@dataclass
class _Job:
    tokens: list[int]
    sampling: Sampling
    score_from: int = -1  # >= 0: a scoring job: log-probs of tokens[score_from:], nothing generated
    loop: asyncio.AbstractEventLoop | None = None  # events go to `aevents` on this loop instead of `events`
    pieces: bool = True  # False: only the final event (a caller that waits for the whole text)
    events: queue.Queue = field(default_factory=queue.Queue)
    aevents: asyncio.Queue | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    ended: bool = False  # the scheduler sent its last event
    # scheduler state
    fed: int = 0  # tokens of `tokens` already decoded
    sent: int = 0  # characters of text already handed out
    text_bytes: bytearray = field(default_factory=bytearray)  # the generated tokens' bytes so far
    generated: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    rng: np.random.Generator | None = None
    t_submit: float = field(default_factory=time.perf_counter)
    t_prompt: float | None = None  # when the prompt had been read

    @property
    def feed(self) -> int:
        """How many of ``tokens`` go through the model: a scoring job needs no logits after its last token."""
        return len(self.tokens) - 1 if self.score_from >= 0 else len(self.tokens)


class _Cancelled(Exception):
    """The request's slot was freed before it finished."""


class Stream:
    """One submitted request. Iterate for text pieces then a ``Generation``; ``cancel()`` frees its slot."""

    def __init__(self, job: _Job, engine: BatchEngine) -> None:
        self._job, self._engine = job, engine

    @property
    def prompt_tokens(self) -> int:
        return len(self._job.tokens)

    def cancel(self) -> None:
        """Stop the request (a no-op once it finished); the scheduler frees its slot before its next step."""
        self._job.cancelled.set()
        self._engine._wake()

    def _unpack(self, event: tuple[str, Any]) -> Any:
        kind, value = event
        if kind == "error":
            raise value
        if kind == "cancelled":
            raise _Cancelled
        return value

    def __iter__(self) -> Iterator[Any]:
        try:
            while True:
                try:
                    item = self._unpack(self._job.events.get())
                except _Cancelled:
                    return
                yield item
                if isinstance(item, (Generation, list)):
                    return
        finally:
            self.cancel()

    def result(self) -> Any:
        """Block until the end: the ``Generation`` (or, for a scoring request, the log-probabilities)."""
        last = None
        for item in self:
            last = item
        if last is None or isinstance(last, str):
            raise EngineClosed("The request was cancelled before it finished.")
        return last

    async def next(self) -> Any:
        """The next piece, ``Generation`` or score list, awaited on the loop the request was submitted from."""
        if self._job.aevents is None:
            raise RuntimeError("This request was submitted without an event loop; iterate it instead.")
        try:
            return self._unpack(await self._job.aevents.get())
        except _Cancelled:
            raise EngineClosed("The request was cancelled before it finished.") from None

    async def aresult(self) -> Any:
        while True:
            item = await self.next()
            if isinstance(item, (Generation, list)):
                return item


class BatchEngine:
    """Parallel slots of one llama.cpp context over ``llm``'s weights (its own context only tokenizes)."""

    def __init__(self, llm, slots: int = 4, n_ctx: int = 0, n_batch: int = 512) -> None:
        import llama_cpp
        from llama_cpp import _internals
        from llama_cpp._utils import suppress_stdout_stderr

        if slots < 1:
            raise ValueError(f"parallel slots must be at least 1 (got {slots}).")
        self.llm, self.slots = llm, slots
        self.n_ctx = n_ctx or llm.n_ctx()
        self.n_batch = max(n_batch, slots)  # every generating slot gets its token into each step
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.n_ctx * slots
        params.n_batch = params.n_ubatch = self.n_batch
        params.n_seq_max = slots
        params.kv_unified = False
        params.n_threads = llm.context_params.n_threads
        params.n_threads_batch = llm.context_params.n_threads_batch
        # One KV stream of n_ctx cells per slot (n_ctx * slots in all); a request stays within its slot's n_ctx
        # (check_fits and the token budget).
        with suppress_stdout_stderr(disable=False):
            self.ctx = _internals.LlamaContext(model=llm._model, params=params, verbose=False)
        if llama_cpp.llama_n_seq_max(self.ctx.ctx) < slots:
            raise RuntimeError(f"llama.cpp gave {llama_cpp.llama_n_seq_max(self.ctx.ctx)} sequences, not {slots}.")
        adapter = getattr(llm, "_lora_adapter", None)
        if adapter is not None:  # the LoRA llm applied to its own context must apply to this one too
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
            scales = (ctypes.c_float * 1)(llm.lora_scale)
            if llama_cpp.llama_set_adapters_lora(self.ctx.ctx, adapters, 1, scales):
                raise RuntimeError(f"Could not apply the LoRA adapter {llm.lora_path} to the batch context.")
        self.vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._llama_cpp = llama_cpp
        self.waiting: queue.Queue[_Job | None] = queue.Queue()
        self.active: dict[int, _Job] = {}
        self.cached: dict[int, list[int]] = {}  # free slot -> the tokens its KV cells hold (positions 0..n-1)
        # what the scheduler did, for tests and the benchmark
        self.stats = {"decode_calls": 0, "most_sequences_in_a_decode": 0, "cancelled": 0, "finished": 0,
                      "prompt_tokens_reused": 0}
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="mochi-batch-engine", daemon=True)
        self.thread.start()

    # --- public --------------------------------------------------------------------------------

    def check_fits(self, n_tokens: int) -> None:
        if n_tokens + 1 > self.n_ctx:
            raise ContextLengthError(n_tokens, self.n_ctx)

    def submit(self, tokens: Sequence[int], sampling: Sampling, loop: asyncio.AbstractEventLoop | None = None,
               pieces: bool = True) -> Stream:
        """Queue a generation; with ``loop``, its events are awaited there (``Stream.next``). ``pieces=False``:
        no text pieces, only the ``Generation`` (fewer wake-ups for a caller that waits for the whole text)."""
        if not tokens:
            raise ValueError("Nothing to continue: the prompt has no tokens.")
        self.check_fits(len(tokens))
        budget = min(sampling.max_tokens, self.n_ctx - len(tokens))
        job = _Job(tokens=list(tokens), sampling=replace(sampling, stop=[s for s in sampling.stop if s],
                                                         max_tokens=budget), pieces=pieces)
        if sampling.temperature > 0:
            job.rng = np.random.default_rng(sampling.seed)
        return self._enqueue(job, loop, done_now=budget <= 0)

    def generate(self, tokens: Sequence[int], sampling: Sampling) -> Stream:
        """Text pieces as they are decoded, then one ``Generation``. Closing the iterator frees the slot."""
        return self.submit(tokens, sampling)

    def complete(self, tokens: Sequence[int], sampling: Sampling) -> Generation:
        return self.submit(tokens, sampling, pieces=False).result()

    def submit_score(self, tokens: Sequence[int], start: int, loop: asyncio.AbstractEventLoop | None = None,
                     ) -> Stream:
        """Queue a scoring request: its result is the log-probability of each of ``tokens[start:]``."""
        if not 1 <= start < len(tokens):
            raise ValueError(f"score needs at least one context token (BOS) before the scored ones and at least one "
                             f"token to score (start={start}, {len(tokens)} tokens).")
        self.check_fits(len(tokens) - 1)
        return self._enqueue(_Job(tokens=list(tokens), sampling=Sampling(max_tokens=0), score_from=start), loop)

    def score(self, tokens: Sequence[int], start: int) -> list[float]:
        """Natural-log probability of each of ``tokens[start:]`` given the tokens before it (``start`` >= 1)."""
        return self.submit_score(tokens, start).result()

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        self._wake()
        self.thread.join(timeout=30)
        self._llama_cpp.llama_batch_free(self.batch)
        self.ctx.close()

    # --- the scheduler -------------------------------------------------------------------------

    def _enqueue(self, job: _Job, loop: asyncio.AbstractEventLoop | None, done_now: bool = False) -> Stream:
        if loop is not None:
            job.loop, job.aevents = loop, asyncio.Queue()
        stream = Stream(job, self)
        if done_now:  # nothing may be generated (max_tokens 0, or no room left): answer without a slot
            self._finish(job, "length")
        elif self.closed.is_set():
            self._event(job, ("error", EngineClosed("The model server is shutting down.")))
        else:
            self.waiting.put(job)
        return stream

    def _wake(self) -> None:
        self.waiting.put(None)  # the scheduler waits on this queue when it has nothing to decode

    def _event(self, job: _Job, event: tuple[str, Any]) -> None:
        if event[0] in ("done", "scores", "error", "cancelled"):
            if job.ended:
                return
            job.ended = True
        if job.loop is not None:
            try:
                job.loop.call_soon_threadsafe(job.aevents.put_nowait, event)
            except RuntimeError:  # that loop is closed: nobody is listening any more
                job.cancelled.set()
        else:
            job.events.put(event)

    def _admit(self) -> None:
        block = not self.active
        while len(self.active) < self.slots:
            try:
                job = self.waiting.get(block=block)
            except queue.Empty:
                return
            block = False
            if job is None or self.closed.is_set():
                if self.closed.is_set():
                    return
                continue
            if job.cancelled.is_set():
                self._end_cancelled(job)
                continue
            self._place(job)

    def _place(self, job: _Job) -> None:
        """Put ``job`` in the free slot whose cached tokens share the longest prefix with it, keeping that prefix.
        At least the last position before the first needed logits is read again (its logits are not kept)."""
        usable = (job.score_from if job.score_from >= 0 else len(job.tokens)) - 1
        free = [s for s in range(self.slots) if s not in self.active]
        shared = {s: _common_prefix(self.cached.get(s, ()), job.tokens, usable) for s in free}
        slot = max(free, key=lambda s: (shared[s], -s))
        keep = shared[slot]
        self.cached.pop(slot, None)
        if not (keep and self._llama_cpp.llama_memory_seq_rm(self.ctx.memory, slot, keep, -1)):
            keep = 0  # nothing shared, or a cache that cannot drop a tail: start the slot afresh
            self._llama_cpp.llama_memory_seq_rm(self.ctx.memory, slot, -1, -1)
        job.fed = keep
        self.stats["prompt_tokens_reused"] += keep
        self.active[slot] = job

    def _loop(self) -> None:
        try:
            while not self.closed.is_set():
                self._admit()
                if self.closed.is_set():
                    break
                for slot in [s for s, j in self.active.items() if j.cancelled.is_set()]:
                    self._end_cancelled(self.active[slot])
                    self._release(slot)
                if not self.active:
                    continue
                try:
                    self._step()
                except Exception as err:  # a failed decode fails its requests, not the server
                    for slot, job in list(self.active.items()):
                        self._event(job, ("error", RuntimeError(f"llama.cpp decode failed: {err}")))
                        self._release(slot, keep=False)
        finally:
            gone = EngineClosed("The model server is shutting down.")
            for slot, job in list(self.active.items()):
                self._event(job, ("error", gone))
                self._release(slot)
            while True:
                try:
                    job = self.waiting.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    self._event(job, ("error", gone))

    def _step(self) -> None:
        """One llama_decode: the next token of every generating slot, then prompt tokens to fill the batch."""
        entries: list[tuple[int, int, bool]] = []  # (slot, position, wants logits)
        for slot, job in self.active.items():
            if job.fed >= job.feed and job.score_from < 0:
                pos = len(job.tokens) + len(job.generated) - 1
                self._put(len(entries), job.generated[-1], pos, slot, True)
                entries.append((slot, pos, True))
        for slot, job in self.active.items():
            room = self.n_batch - len(entries)
            if room <= 0:
                break
            if job.fed < job.feed:  # prompt (or scored text) still going in
                take = min(job.feed - job.fed, room)
                for pos in range(job.fed, job.fed + take):
                    if job.score_from >= 0:
                        wants = pos >= job.score_from - 1
                    else:
                        wants = pos == len(job.tokens) - 1
                    self._put(len(entries), job.tokens[pos], pos, slot, wants)
                    entries.append((slot, pos, wants))
                job.fed += take
        self.batch.n_tokens = len(entries)
        rc = self._llama_cpp.llama_decode(self.ctx.ctx, self.batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        self.stats["decode_calls"] += 1
        sequences = len({slot for slot, _, _ in entries})
        self.stats["most_sequences_in_a_decode"] = max(self.stats["most_sequences_in_a_decode"], sequences)
        finished: list[int] = []
        for i, (slot, pos, wants) in enumerate(entries):
            if not wants:
                continue
            job = self.active[slot]
            logits = np.ctypeslib.as_array(self._llama_cpp.llama_get_logits_ith(self.ctx.ctx, i),
                                           shape=(self.n_vocab,))
            if job.score_from >= 0:
                job.logprobs.append(float(logits[job.tokens[pos + 1]] - _logsumexp(logits)))
                if pos + 1 == len(job.tokens) - 1:
                    self._event(job, ("scores", job.logprobs))
                    finished.append(slot)
            elif self._sampled(job, logits):
                finished.append(slot)
        for slot in finished:
            self.stats["finished"] += 1
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
        if job.t_prompt is None:
            job.t_prompt = time.perf_counter()
        token = _sample(logits, job.sampling, job.rng)
        if self._llama_cpp.llama_vocab_is_eog(self.vocab, token):
            self._finish(job, "stop")
            return True
        job.generated.append(token)
        job.text_bytes += self.llm.detokenize([token])
        text = job.text_bytes.decode("utf-8", errors="replace")
        hits = [(i, s) for s in job.sampling.stop if (i := text.find(s)) >= 0]
        if hits:
            at, word = min(hits)
            self._finish(job, "stop", text[:at], word)
            return True
        if len(job.generated) >= job.sampling.max_tokens:
            self._finish(job, "length", text)
            return True
        # Hold back what could still become a stop string, and an incomplete UTF-8 character.
        hold = max((len(s) - 1 for s in job.sampling.stop), default=0)
        safe = text[: len(text) - hold] if hold else text
        if safe.endswith("\ufffd"):
            safe = safe[:-1]
        self._emit(job, safe)
        return False

    def _emit(self, job: _Job, upto: str) -> None:
        if job.pieces and len(upto) > job.sent:
            self._event(job, ("piece", upto[job.sent:]))
            job.sent = len(upto)

    def _finish(self, job: _Job, reason: str, text: str | None = None, word: str | None = None) -> None:
        text = job.text_bytes.decode("utf-8", errors="replace") if text is None else text
        self._emit(job, text)
        now = time.perf_counter()
        read = job.t_prompt or now
        self._event(job, ("done", Generation(text=text, finish_reason=reason, prompt_tokens=len(job.tokens),
                                             completion_tokens=len(job.generated), stop_word=word,
                                             prompt_ms=(read - job.t_submit) * 1000, predicted_ms=(now - read) * 1000)))

    def _end_cancelled(self, job: _Job) -> None:
        if not job.ended:
            self.stats["cancelled"] += 1
        self._event(job, ("cancelled", None))

    def _release(self, slot: int, keep: bool = True) -> None:
        """Free ``slot``; with ``keep``, its cells keep the request's prompt tokens that were read."""
        job = self.active[slot]
        read = min(job.fed, len(job.tokens)) if keep else 0
        self._llama_cpp.llama_memory_seq_rm(self.ctx.memory, slot, read, -1)
        if read:
            self.cached[slot] = job.tokens[:read]
        del self.active[slot]  # last: a slot seen free holds only its cached prompt


def _common_prefix(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    n = min(len(a), len(b), limit)
    for i in range(n):
        if a[i] != b[i]:
            return i
    return max(n, 0)


def _logsumexp(x: np.ndarray) -> float:
    m = float(x.max())
    return m + float(np.log(np.exp(x - m).sum()))


def _sample(logits: np.ndarray, s: Sampling, rng: np.random.Generator | None) -> int:
    """Greedy at temperature 0; else a draw from softmax(logits / temperature), narrowed by top-k, top-p, min-p.

    The draw is Gumbel-max (argmax of the scaled logits plus Gumbel noise, one noise value per vocabulary
    entry each step from the request's own generator): it flips only if two perturbed logits come within
    rounding of each other, so batching's last-bit differences in the logits leave a seeded request's text
    alone, where inverse-CDF sampling over a flat 50k-token distribution flips every few dozen tokens.
    """
    if s.temperature <= 0 or rng is None:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / s.temperature
    noise = -np.log(np.maximum(rng.standard_exponential(z.shape[0], dtype=np.float32), np.float32(1e-30)))
    if s.top_k <= 0 and s.top_p >= 1.0 and s.min_p <= 0.0:
        return int(np.argmax(z + noise))
    cand = np.argpartition(-z, s.top_k - 1)[: s.top_k] if 0 < s.top_k < z.shape[0] else np.arange(z.shape[0])
    cand = cand[np.argsort(-z[cand], kind="stable")]
    p = np.exp(z[cand] - z[cand[0]])
    p /= p.sum()
    if s.top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(p), s.top_p) + 1)
        cand, p = cand[:keep], p[:keep]
    if s.min_p > 0.0:
        cand = cand[: max(1, int((p >= s.min_p * p[0]).sum()))]
    return int(cand[np.argmax(z[cand] + noise[cand])])
