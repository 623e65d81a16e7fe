"""The small model at work beside a large one: context for it, a ranking of its candidates, a check of its code.

- ``enhance(query)``: a context block for a large model: the project's chunks that BM25 finds for
  the query (optionally widened by a sketch the domain model writes first), the project's mined
  conventions, signatures of the symbols involved and a short note written by the domain model.
- ``rerank(prompt, candidates)``: each candidate scored by the domain model's length-normalised
  log-likelihood given the prompt, best first.
- ``verify(code)``: departures from the mined conventions, and the lines the domain model finds
  most surprising, each with a reason and a suggestion (the model's own version of the line).

The corpus is ``deduplicated_chunks`` (already scrubbed of secrets), the conventions
``project_conventions``; the domain model is anything with the ``DomainModel`` methods, in practice
the exported GGUF served by llama.cpp (``server.ModelServer``).
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import dagster as dg
from pydantic import BaseModel, Field

from mochi_pipeline.data_generation.code_facts import defined_names, short_name, signature
from mochi_pipeline.deployment.retrieval import BM25Index
from mochi_pipeline.ingestion.languages import language_for
from mochi_pipeline.io_manager import asset_base, read_asset_file, stored_file
from mochi_pipeline.preprocessing.conventions import (
    MIN_OBSERVED,
    STRONG,
    FileFacts,
    ProjectConventions,
    naming_style,
    restyle,
)
from mochi_pipeline.records import Chunk


class DomainModel(Protocol):
    def score(self, prompt: str, continuation: str) -> list[tuple[str, float]]:
        """(token text, natural-log probability) of each token of ``continuation`` after ``prompt``."""

    def complete(self, prompt: str, max_tokens: int, stop: Sequence[str] = ()) -> str:
        """Greedy continuation of ``prompt``."""

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """``messages`` rendered with the model's chat template, ending in the assistant's turn."""

    @property
    def chat_stops(self) -> list[str]: ...


class AssistError(ValueError):
    """Bad input or a missing artifact; the message says what to do."""


class RetrievedChunk(BaseModel):
    path: str
    start_line: int
    end_line: int
    symbol: str
    score: float
    text: str


class ContextBlock(BaseModel):
    query: str
    search_query: str = Field(description="What BM25 searched: the query, plus the model's sketch when rewritten.")
    chunks: list[RetrievedChunk]
    conventions: str = Field(description="The project's conventions (markdown), with how firmly each is kept.")
    signatures: list[str] = Field(description="Signatures of the project's symbols the query and chunks involve.")
    note: str = Field("", description="A short note on the query written by the domain model.")

    def markdown(self) -> str:
        """The block as a large model reads it."""
        parts = [f"# Project context for: {self.query}"]
        if self.note:
            parts.append(f"## Note from the project's model\n{self.note.strip()}")
        if self.signatures:
            parts.append("## Signatures involved\n" + "\n".join(f"- `{s}`" for s in self.signatures))
        if self.conventions:
            parts.append(f"## Conventions of this project\n{self.conventions.strip()}")
        for c in self.chunks:
            parts.append(f"## {c.path}:{c.start_line}-{c.end_line}" + (f" ({c.symbol})" if c.symbol else "")
                         + f"\n```\n{c.text.rstrip()}\n```")
        return "\n\n".join(parts) + "\n"


class RankedCandidate(BaseModel):
    index: int = Field(description="Position of the candidate in the request.")
    score: float = Field(description="Mean log-probability per token under the domain model (higher is better).")
    tokens: int
    candidate: str


class Finding(BaseModel):
    line: int = Field(description="1-based line of the code checked.")
    kind: str = Field(description="convention (departs from the mined conventions) or surprise (the model).")
    rule: str
    reason: str
    suggestion: str


def _finding(line: int, rule: str, reason: str, suggestion: str) -> Finding:
    return Finding(line=line, kind="convention", rule=rule, reason=reason, suggestion=suggestion)


def convention_findings(code: str, language: str, conventions: ProjectConventions) -> list[Finding]:
    """Where ``code`` departs from what the project does at least ``STRONG`` of the time."""
    lang = conventions.language(language)
    if lang is None:
        return []
    facts = FileFacts(language, code)
    out: list[Finding] = []
    if lang.indent and lang.indent.strong and facts.indent and facts.indent != lang.indent.value:
        line = next((i for i, ln in enumerate(facts.lines, 1) if ln[:1] in (" ", "\t")), 1)
        out.append(_finding(line, "indentation", f"indented by {facts.indent}; the project indents by "
                            f"{lang.indent.value} ({lang.indent.share:.0%} of its files)",
                            f"re-indent with {lang.indent.value}"))
    if lang.line_limit and lang.line_limit.strong:
        limit = int(lang.line_limit.value)
        out += [_finding(i, "line_length", f"{len(ln)} characters; the project keeps lines within {limit}",
                         f"break the line to fit {limit} characters")
                for i, ln in enumerate(facts.lines, 1) if len(ln) > limit]
    for what, names, share in (("function", facts.functions, lang.function_names),
                               ("class", facts.classes, lang.class_names)):
        if share is None or not share.strong:
            continue
        for name, line in names:
            style = naming_style(name)
            if style and style != share.value:
                out.append(_finding(line, f"{what}_naming", f"{what} `{name}` is {style}; the project names "
                                    f"{what}s in {share.value} ({share.share:.0%} of {share.observed})",
                                    f"rename to {restyle(name, share.value)}"))
    if lang.quotes and lang.quotes.strong:
        other = [line for quote, line in facts.quotes if quote != lang.quotes.value]
        if other:
            out.append(_finding(other[0], "quotes", f"{len(other)} string(s) in {_other(lang.quotes.value)} quotes; "
                                f"the project uses {lang.quotes.value} quotes ({lang.quotes.share:.0%})",
                                f"use {lang.quotes.value} quotes"))
    out += _python_findings(facts, lang) if language == "python" else []
    return sorted(out, key=lambda f: f.line)


def _rare(share) -> bool:
    """The project (almost) never does this: at most 1 - STRONG of the cases, seen often enough to tell."""
    return share is not None and share.observed >= MIN_OBSERVED and share.share <= 1 - STRONG


def _python_findings(facts: FileFacts, lang) -> list[Finding]:
    out = []
    rules = {
        "bare_except": (lang.errors.get("bare_except"), "catch the exception types you expect"),
        "broad_except": (lang.errors.get("broad_except"), "catch the specific exceptions; the project's own: "
                         + ", ".join(lang.error_classes[:5]) if lang.error_classes else "catch specific exceptions"),
        "relative_import": (lang.imports.get("relative_import"), "import by the package's absolute name"),
    }
    for fact, line in facts.facts:
        share, suggestion = rules.get(fact, (None, ""))
        if _rare(share):
            out.append(_finding(line, fact, f"{share.value}: the project does this in {share.share:.0%} of "
                                f"{share.observed} cases", suggestion))
    future = lang.imports.get("future_annotations")
    if future and future.strong and (facts.functions or facts.classes) and not facts.has("future_annotations"):
        out.append(_finding(1, "future_annotations", f"no `{future.value}`; {future.share:.0%} of the project's "
                            "modules start with it", f"add `{future.value}` at the top"))
    return out


def _other(quote: str) -> str:
    return "single" if quote == "double" else "double"


def line_surprise(code: str, scores: list[tuple[str, float]]) -> list[tuple[int, float, int]]:
    """(1-based line, mean negative log-probability per token, tokens) for each line with a scored token.

    A token belongs to the line it starts on; tokens of whitespace only are not counted.
    """
    per_line: dict[int, list[float]] = {}
    line = 1
    for piece, logprob in scores:
        # Skip the newlines a piece starts with: the token belongs to the line its text begins on.
        lead = len(piece) - len(piece.lstrip("\n"))
        line += lead
        if piece.strip():
            per_line.setdefault(line, []).append(-logprob)
        line += piece[lead:].count("\n")
    n_lines = code.count("\n") + 1
    return [(ln, sum(v) / len(v), len(v)) for ln, v in sorted(per_line.items()) if ln <= n_lines]


class Assistant:
    """The three operations over one project's corpus, conventions and domain model."""

    def __init__(self, chunks: list[Chunk], conventions: ProjectConventions, model: DomainModel | None) -> None:
        self.chunks = chunks
        self.conventions = conventions
        self.model = model
        self.index = BM25Index([f"{c.path} {c.symbol}\n{c.text}" for c in chunks])
        self.definitions: dict[str, Chunk] = {}
        for chunk in chunks:
            for name in defined_names(chunk):
                self.definitions.setdefault(name, chunk)

    @classmethod
    def from_artifacts(cls, artifacts_root: str | Path, model: DomainModel | None) -> Assistant:
        """Load ``deduplicated_chunks`` and ``project_conventions`` as the pipeline stored them."""
        loaded = []
        for asset in ("deduplicated_chunks", "project_conventions"):
            path = stored_file(asset_base(artifacts_root, dg.AssetKey(asset)))
            if path is None:
                raise AssistError(f"No {asset} under {artifacts_root}: run `mochi run` (or materialize {asset}) "
                                  "first.")
            loaded.append(read_asset_file(path))
        return cls(loaded[0], loaded[1], model)

    def _need_model(self) -> DomainModel:
        if self.model is None:
            raise AssistError("This operation needs the domain model; start it with a GGUF (mochi serve / mochi mcp).")
        return self.model

    def signatures(self, text: str, chunks: Sequence[Chunk] = (), limit: int = 10) -> list[str]:
        """Signatures of project symbols named in ``text`` first, then of those the given chunks define."""
        names = [t for t in dict.fromkeys(_identifiers(text)) if t in self.definitions]
        names += [short_name(c.symbol) for c in chunks if c.symbol and "," not in c.symbol]
        out: list[str] = []
        for name in dict.fromkeys(names):
            chunk = self.definitions.get(name)
            sig = signature(chunk, name) if chunk is not None else None
            if sig is not None and sig.text not in out:
                out.append(sig.text)
            if len(out) == limit:
                break
        return out

    def enhance(self, query: str, k: int = 5, rewrite: bool = False, note: bool = True,
                note_tokens: int = 96) -> ContextBlock:
        """A context block for a large model about ``query`` (``rewrite``: widen the search with the model's sketch)."""
        if not query.strip():
            raise AssistError("The query is empty: say what the large model is asked to do.")
        search = query
        if rewrite:
            # HyDE: search with the code the domain model would write, not only the words of the request.
            sketch = self._need_model().complete(f"# {query.strip()}\n", max_tokens=64)
            search = f"{query}\n{sketch}"
        hits = self.index.search(search, k)
        chunks = [self.chunks[i] for i, _ in hits]
        written = ""
        if note and self.model is not None:
            prompt = self.model.chat_prompt([{"role": "user", "content": query.strip()}])
            written = self.model.complete(prompt, max_tokens=note_tokens, stop=self.model.chat_stops).strip()
        return ContextBlock(
            query=query, search_query=search,
            chunks=[RetrievedChunk(path=c.path, start_line=c.start_line, end_line=c.end_line, symbol=c.symbol,
                                   score=round(score, 4), text=c.text) for c, (_, score) in zip(chunks, hits,
                                                                                               strict=True)],
            conventions=self.conventions.markdown(), signatures=self.signatures(query, chunks), note=written,
        )

    def rerank(self, prompt: str, candidates: Sequence[str]) -> list[RankedCandidate]:
        """``candidates`` ordered by the domain model's mean log-probability of each given ``prompt``."""
        if not candidates:
            raise AssistError("No candidates to rerank: send at least one.")
        if empty := [i for i, c in enumerate(candidates) if not c]:
            raise AssistError(f"Candidate(s) {empty} are empty strings; drop them or give them text.")
        model = self._need_model()
        ranked = []
        for i, candidate in enumerate(candidates):
            scores = model.score(prompt, candidate)
            ranked.append(RankedCandidate(index=i, score=round(sum(lp for _, lp in scores) / len(scores), 5),
                                          tokens=len(scores), candidate=candidate))
        return sorted(ranked, key=lambda r: (-r.score, r.index))

    def verify(self, code: str, path: str = "", language: str = "", surprising_lines: int = 3) -> list[Finding]:
        """Departures from the project's conventions, then the lines the domain model finds most surprising."""
        if not code.strip():
            raise AssistError("No code to verify.")
        language = language or (language_for(path) if path else "") or self._main_language()
        findings = convention_findings(code, language, self.conventions)
        if self.model is not None and surprising_lines:
            findings += self._surprises(code, path, surprising_lines)
        return findings

    def _main_language(self) -> str:
        return self.conventions.languages[0].language if self.conventions.languages else ""

    def surprising_lines(self, code: str, path: str = "", top: int = 3) -> tuple[list[tuple[int, float]], float]:
        """The (1-based line, nats per token) of at most ``top`` lines of ``code`` the domain model finds most
        surprising, read after a ``# path`` line, most surprising first, only lines above the median of the
        code's lines; and that median."""
        header = f"# {path}\n" if path else ""
        per_line = line_surprise(code, self._need_model().score(header, code))
        if len(per_line) < 2:
            return [], 0.0
        typical = statistics.median(s for _, s, _ in per_line)
        ranked = sorted(per_line, key=lambda x: -x[1])[:top]
        return [(line, surprise) for line, surprise, _ in ranked if surprise > typical], typical

    def _surprises(self, code: str, path: str, top: int) -> list[Finding]:
        model = self._need_model()
        header = f"# {path}\n" if path else ""
        flagged, typical = self.surprising_lines(code, path, top)
        lines = code.splitlines()
        out = []
        for line, surprise in flagged:
            before = header + "".join(f"{ln}\n" for ln in lines[: line - 1])
            indent = lines[line - 1][: len(lines[line - 1]) - len(lines[line - 1].lstrip())]
            own = model.complete(before + indent, max_tokens=48, stop=["\n"]).rstrip()
            out.append(Finding(
                line=line, kind="surprise", rule="unlikely_line",
                reason=f"the project's model finds this line unlikely: {surprise:.2f} nats/token against a median "
                       f"of {typical:.2f} for the lines of this code",
                suggestion=f"the model would write: {(indent + own).strip()}" if own.strip()
                else "check this line against similar code in the project",
            ))
        return out


def _identifiers(text: str) -> list[str]:
    return re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text)
