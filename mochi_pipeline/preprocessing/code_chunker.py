"""Cut source files into chunks along syntax boundaries, each within a token budget.

Strategies (``ChunkingSettings.strategy``):

* ``function``: every function and method is a chunk; a class is split into its methods plus a
  ``class`` chunk holding the rest of it (signature, docstring, fields).
* ``class``: every top-level definition is a chunk, classes whole.
* ``file``: the whole file is one chunk; over budget it is cut like ``class``.
* ``sliding_window``: overlapping windows of lines (also the fallback for languages without a
  grammar and for files tree-sitter cannot make sense of).

With every AST strategy: a definition over budget is split along its children (a class into its
members, a function into groups of statements, down to lines); sibling pieces smaller than
``min_tokens`` are merged (kind ``merged``); code between definitions becomes ``module`` chunks
(``class`` inside a class), so no code is lost. Pieces made of punctuation only (a closing ``}``)
carry nothing to learn and are dropped and counted.

``chunk_source`` is path-independent, which is what the per-file cache stores; ``assemble`` adds
the path, date, ids and the file line of the context header.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path

from tree_sitter import Node

from mochi_pipeline.preprocessing.chunk_cache import ChunkCache, cache_key
from mochi_pipeline.preprocessing.context_builder import (
    FileContext,
    class_signature,
    context_body,
    context_header,
    file_context,
)
from mochi_pipeline.preprocessing.grammars import (
    SPECS,
    LanguageSpec,
    body_of,
    definition_name,
    function_value_name,
    parser_for,
    unwrap,
)
from mochi_pipeline.preprocessing.parallel import shared_pool
from mochi_pipeline.preprocessing.settings import ChunkingSettings, ChunkStrategy, DedupSettings
from mochi_pipeline.preprocessing.token_counter import count_tokens, line_token_counts, token_spans
from mochi_pipeline.records import Chunk, SourceFile
from mochi_pipeline.storage import content_hash

# Bump when the chunking logic changes: it is part of every cache key and of the assets' code_version.
CHUNKER_VERSION = "3"

_WORD_RE = re.compile(r"\w")

# Below this many bytes to parse, a process pool costs more than it saves.
PARALLEL_MIN_BYTES = 1_000_000
# Files go to workers in batches (fewer round trips), about 4 per worker, 16 kB to 256 kB each.
BATCH_BYTES = 256_000
MIN_BATCH_BYTES = 16_000

# Files whose syntax errors cover more than this share of the lines are cut into windows instead.
MAX_ERROR_SHARE = 0.5


@dataclass
class Piece:
    start: int  # 0-based, inclusive
    end: int
    symbol: str
    kind: str
    scope: tuple[str, ...] = ()  # signatures of the enclosing classes, outermost first
    text: str | None = None  # set only for a fragment of one over-long line


@dataclass
class _Member:
    start: int
    end: int
    node: Node
    inner: Node
    kind: str  # function, class or other
    name: str


@dataclass
class FileChunks:
    """The path-independent chunking result of one file (what the cache stores)."""

    mode: str  # ast, window, fallback_unknown_language, fallback_parse_error or fallback_too_deep
    pieces: list[dict]
    dropped_punctuation: int = 0


def _span(node: Node) -> tuple[int, int]:
    start, end = node.start_point.row, node.end_point.row
    if node.end_point.column == 0 and end > start:
        end -= 1
    return start, end


class _FileChunker:
    def __init__(self, text: str, settings: ChunkingSettings) -> None:
        self.settings = settings
        # Split on "\n" only, as tree-sitter counts rows (str.splitlines also splits on \r, \f, ...).
        parts = text.split("\n")
        self.lines = [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
        counts = line_token_counts(text)[:len(self.lines)]
        self.prefix = list(accumulate(counts, initial=0))
        self.budget = settings.max_tokens

    # --- token arithmetic on line ranges ------------------------------------------------------

    def tokens(self, a: int, b: int) -> int:
        return self.prefix[b + 1] - self.prefix[a]

    def trim(self, a: int, b: int) -> tuple[int, int] | None:
        while a <= b and self.tokens(a, a) == 0:
            a += 1
        while b >= a and self.tokens(b, b) == 0:
            b -= 1
        return (a, b) if a <= b else None

    def piece_text(self, p: Piece) -> str:
        return p.text if p.text is not None else "".join(self.lines[p.start:p.end + 1]).rstrip("\r\n")

    def piece_tokens(self, p: Piece) -> int:
        return count_tokens(p.text) if p.text is not None else self.tokens(p.start, p.end)

    # --- fallbacks: lines and windows ------------------------------------------------------------

    def _fragments(self, line: int, limit: int, symbol: str, kind: str, scope: tuple[str, ...]) -> list[Piece]:
        """Cut one line longer than ``limit`` tokens at token boundaries (minified code)."""
        text = self.lines[line].rstrip("\r\n")
        spans = token_spans(text)
        pieces = []
        for i in range(0, len(spans), limit):
            group = spans[i:i + limit]
            end = spans[i + limit][0] if i + limit < len(spans) else len(text)
            pieces.append(Piece(line, line, symbol, kind, scope, text[group[0][0]:end]))
        return pieces

    def _last_line_within(self, a: int, b: int, limit: int) -> int:
        """The largest j in [a-1, b] with tokens(a, j) <= limit (a-1: not even line a fits)."""
        j = bisect.bisect_right(self.prefix, self.prefix[a] + limit, a + 1, b + 2) - 2
        return j

    def line_split(self, a: int, b: int, symbol: str, kind: str, scope: tuple[str, ...],
                   limit: int | None = None, overlap: int = 0) -> list[Piece]:
        """Consecutive line groups of at most ``limit`` tokens, each overlapping the last by ``overlap``."""
        limit = limit or self.budget
        pieces: list[Piece] = []
        i = a
        while i <= b:
            j = self._last_line_within(i, b, limit)
            if j < i:  # line i alone is over the limit
                pieces += self._fragments(i, limit, symbol, kind, scope)
                i += 1
                continue
            if self.tokens(i, j) > 0:
                pieces.append(Piece(i, j, symbol, kind, scope))
            if j >= b:
                break
            k = j + 1
            while overlap and k - 1 > i and self.tokens(k - 1, j) <= overlap:
                k -= 1
            i = k
        return pieces

    def windows(self) -> list[Piece]:
        s = self.settings
        if not self.lines:
            return []
        size = min(s.window_tokens, s.max_tokens)
        return self.line_split(0, len(self.lines) - 1, "", "window", (), size, s.overlap_tokens)


class _AstChunker(_FileChunker):
    def __init__(self, text: str, settings: ChunkingSettings, spec: LanguageSpec, source: bytes) -> None:
        super().__init__(text, settings)
        self.spec = spec
        self.source = source
        # With the function strategy every class is cut into its methods; otherwise only over budget.
        self.split_all_classes = settings.strategy == ChunkStrategy.FUNCTION

    def chunk(self, root: Node) -> list[Piece]:
        if not self.lines:
            return []
        last = len(self.lines) - 1
        if self.settings.strategy == ChunkStrategy.FILE and self.tokens(0, last) <= self.budget:
            span = self.trim(0, last)
            return [Piece(span[0], span[1], "", "file")] if span else []
        return self._container(self._members(root), 0, last, "", (), "module", ())

    # --- members of a scope -----------------------------------------------------------------

    def _classify(self, inner: Node) -> tuple[str, str]:
        spec = self.spec
        if inner.type in spec.functions:
            return "function", definition_name(spec, inner)
        if inner.type in spec.classes:
            return "class", definition_name(spec, inner)
        name = function_value_name(spec, inner)
        return ("function", name) if name else ("other", "")

    def _members(self, parent: Node) -> list[_Member]:
        members: list[_Member] = []
        pending: list[_Member] = []  # comments not yet known to document a definition
        for child in parent.named_children:
            start, end = _span(child)
            if child.type in self.spec.comments:
                pending.append(_Member(start, end, child, child, "other", ""))
                continue
            inner = unwrap(self.spec, child)
            kind, name = self._classify(inner)
            if kind != "other":
                prev_end = members[-1].end if members else -1
                # Comments directly above a definition (no blank line) document it: keep them together.
                while pending and pending[-1].end >= start - 1 and pending[-1].start > prev_end:
                    start = pending.pop().start
            members += pending
            pending = []
            members.append(_Member(start, end, child, inner, kind, name))
        return members + pending

    # --- scopes -------------------------------------------------------------------------------

    def _container(self, members: list[_Member], lo: int, hi: int, symbol: str, scope: tuple[str, ...],
                   gap_kind: str, outer_scope: tuple[str, ...]) -> list[Piece]:
        """Pieces covering lines lo..hi: definitions, and 'gap' pieces for the code between them."""
        items: list[list[Piece]] = []
        cursor = lo
        for m in members:
            if m.kind == "other":
                continue
            start, end = max(m.start, cursor), m.end
            if end < start:  # shares its line with the previous definition, which already holds it
                continue
            if start > cursor:
                items.append(self._gap(members, cursor, start - 1, symbol, gap_kind,
                                       outer_scope if cursor == lo else scope))
            items.append(self._definition(m, start, end, symbol, scope))
            cursor = end + 1
        if cursor <= hi:
            items.append(self._gap(members, cursor, hi, symbol, gap_kind, outer_scope if cursor == lo else scope))
        return self._merge_small([item for item in items if item])

    def _gap(self, members: list[_Member], a: int, b: int, symbol: str, kind: str,
             scope: tuple[str, ...]) -> list[Piece]:
        span = self.trim(a, b)
        if span is None:
            return []
        a, b = span
        if self.tokens(a, b) <= self.budget:
            return [Piece(a, b, symbol, kind, scope)]
        nodes = [m.node for m in members if m.kind == "other" and m.end >= a and m.start <= b]
        return self._pack(nodes, a, b, symbol, kind, scope, 0)

    def _definition(self, m: _Member, start: int, end: int, scope_symbol: str,
                    scope: tuple[str, ...]) -> list[Piece]:
        symbol = ".".join(part for part in (scope_symbol, m.name) if part)
        n = self.tokens(start, end)
        if m.kind == "class":
            body = body_of(m.inner)
            members = self._members(body) if body is not None else []
            has_defs = any(x.kind != "other" for x in members)
            if body is not None and (n > self.budget or (self.split_all_classes and has_defs)):
                inner_scope = scope + (class_signature(m.node, body, self.source),)
                return self._container(members, start, end, symbol, inner_scope, "class", scope)
        if n <= self.budget:
            return [Piece(start, end, symbol, m.kind, scope)]
        return self._pack(self._flatten(m.inner, start, end), start, end, symbol, m.kind, scope, 0)

    # --- splitting one over-budget range --------------------------------------------------------

    def _flatten(self, node: Node, a: int, b: int) -> list[Node]:
        """The node's children, descending into whichever child holds most of the lines (the body)."""
        kids = list(node.named_children)
        while kids:
            big = max(kids, key=lambda k: _span(k)[1] - _span(k)[0])
            bs, be = _span(big)
            if (be - bs + 1) * 2 <= (b - a + 1) or not big.named_children:
                break
            i = kids.index(big)
            kids[i:i + 1] = big.named_children
        return kids

    def _pack(self, nodes: list[Node], a: int, b: int, symbol: str, kind: str, scope: tuple[str, ...],
              depth: int) -> list[Piece]:
        """Group the lines a..b, cut where a node starts, into pieces within budget."""
        starts: dict[int, Node] = {}
        for node in nodes:
            s, e = _span(node)
            if a < s <= b and (s not in starts or _span(starts[s])[1] < e):
                starts[s] = node
        if not starts or depth > 40:
            return self.line_split(a, b, symbol, kind, scope)
        cuts = sorted(starts)
        segments = [(a, cuts[0] - 1, None)] + [
            (c, (cuts[i + 1] - 1) if i + 1 < len(cuts) else b, starts[c]) for i, c in enumerate(cuts)
        ]
        pieces: list[Piece] = []
        group: list[int] | None = None
        for s, e, node in segments:
            if self.tokens(s, e) > self.budget:
                if group:
                    pieces.append(Piece(group[0], group[1], symbol, kind, scope))
                    group = None
                if node is None:
                    pieces += self.line_split(s, e, symbol, kind, scope)
                else:
                    pieces += self._pack(self._flatten(node, s, e), s, e, symbol, kind, scope, depth + 1)
            elif group is not None and self.tokens(group[0], e) <= self.budget:
                group[1] = e
            else:
                if group:
                    pieces.append(Piece(group[0], group[1], symbol, kind, scope))
                group = [s, e]
        if group:
            pieces.append(Piece(group[0], group[1], symbol, kind, scope))
        trimmed = []
        for p in pieces:
            span = self.trim(p.start, p.end) if p.text is None else (p.start, p.end)
            if span is not None:
                p.start, p.end = span
                trimmed.append(p)
        return trimmed

    # --- merging tiny siblings -------------------------------------------------------------------

    def _merge_small(self, items: list[list[Piece]]) -> list[Piece]:
        """Adjacent single-piece items under ``min_tokens`` are packed together within budget."""
        small = self.settings.min_tokens
        out: list[Piece] = []
        run: list[Piece] = []

        def flush() -> None:
            if len(run) == 1:
                out.append(run[0])
            elif run:
                symbols = [p.symbol for p in run if p.symbol]
                unique = list(dict.fromkeys(symbols))
                out.append(Piece(run[0].start, run[-1].end, ", ".join(unique), "merged", run[0].scope))
            run.clear()

        for item in items:
            p = item[0]
            if len(item) == 1 and p.text is None and self.tokens(p.start, p.end) < small:
                if run and self.tokens(run[0].start, p.end) > self.budget:
                    flush()
                run.append(p)
                continue
            flush()
            out += item
        flush()
        return out


def _error_share(root: Node, n_lines: int) -> float:
    if not root.has_error or n_lines == 0:
        return 0.0
    bad = sum(_span(c)[1] - _span(c)[0] + 1 for c in root.children if c.type == "ERROR" or c.is_missing)
    return bad / n_lines


def _render(chunker: _FileChunker, pieces: list[Piece], ctx: FileContext | None) -> tuple[list[dict], int]:
    rendered, dropped = [], 0
    for p in pieces:
        text = chunker.piece_text(p)
        if _WORD_RE.search(text) is None:
            dropped += 1
            continue
        rendered.append({
            "symbol": p.symbol, "kind": p.kind, "start_line": p.start + 1, "end_line": p.end + 1, "text": text,
            "n_tokens": chunker.piece_tokens(p),
            "context": context_body(ctx, p.start, p.end, p.scope) if ctx is not None else "",
        })
    return rendered, dropped


def chunk_source(text: str, language: str, settings: ChunkingSettings) -> FileChunks:
    """Chunk one file's text (no path needed; this is what the per-file cache stores)."""
    parser = parser_for(language)
    if settings.strategy == ChunkStrategy.SLIDING_WINDOW or parser is None:
        plain = _FileChunker(text, settings)
        pieces, dropped = _render(plain, plain.windows(), None)
        return FileChunks("window" if parser is not None else "fallback_unknown_language", pieces, dropped)
    source = text.encode("utf-8", "surrogatepass")
    try:
        tree = parser.parse(source)
    except ValueError:  # tree-sitter refuses the input (e.g. cancelled or unparsable encoding)
        plain = _FileChunker(text, settings)
        pieces, dropped = _render(plain, plain.windows(), None)
        return FileChunks("fallback_parse_error", pieces, dropped)
    chunker = _AstChunker(text, settings, SPECS[language], source)
    if _error_share(tree.root_node, len(chunker.lines)) > MAX_ERROR_SHARE:
        pieces, dropped = _render(chunker, chunker.windows(), None)
        return FileChunks("fallback_parse_error", pieces, dropped)
    try:
        ctx = file_context(SPECS[language], tree.root_node, text)
        pieces, dropped = _render(chunker, chunker.chunk(tree.root_node), ctx)
    except RecursionError:  # nesting deeper than Python's stack (generated or hostile code): cut into windows
        pieces, dropped = _render(chunker, chunker.windows(), None)
        return FileChunks("fallback_too_deep", pieces, dropped)
    return FileChunks("ast", pieces, dropped)


def comment_prefix(language: str) -> str:
    spec = SPECS.get(language)
    return spec.comment_prefix if spec is not None else "#"


def assemble(file: SourceFile, result: FileChunks) -> list[Chunk]:
    """Turn a file's cached pieces into ``Chunk`` records (path, date, stable id, full context)."""
    prefix = comment_prefix(file.language)
    chunks = []
    for p in result.pieces:
        chunks.append(Chunk(
            id=content_hash(file.path, str(p["start_line"]), str(p["end_line"]), p["text"]),
            path=file.path, language=file.language, symbol=p["symbol"], kind=p["kind"],
            start_line=p["start_line"], end_line=p["end_line"], text=p["text"], n_tokens=p["n_tokens"],
            context=context_header(file.path, prefix, p["context"]),
            file_sha=file.sha, file_date=file.last_commit_date,
        ))
    return chunks


def chunk_file(file: SourceFile, settings: ChunkingSettings) -> list[Chunk]:
    return assemble(file, chunk_source(file.text, file.language, settings))


@dataclass
class ChunkingStats:
    files: int = 0
    cache_hits: int = 0
    modes: dict[str, int] = field(default_factory=dict)  # ast, window, fallback_* -> files
    dropped_punctuation: int = 0
    # MinHash signatures with word counts (text key -> signed text) of the chunks cut in this call, when asked for.
    signatures: dict = field(default_factory=dict)


def _chunk_batch(tasks: list[tuple[str, str, str]], settings: ChunkingSettings, cache_root: str | None,
                 dedup: DedupSettings | None = None) -> tuple[list[dict], dict]:
    """Worker: chunk (key, text, language) tasks, store each result in the cache, and sign the chunks."""
    from mochi_pipeline.preprocessing.deduplicator import chunk_signed, text_key

    cache = ChunkCache(cache_root) if cache_root else None
    results, sigs = [], {}
    for key, text, language in tasks:
        chunked = chunk_source(text, language, settings)
        # Not dataclasses.asdict: its deep copy of the pieces cost a quarter of the chunking time.
        result = {"mode": chunked.mode, "pieces": chunked.pieces, "dropped_punctuation": chunked.dropped_punctuation}
        if cache is not None:
            cache.put(key, result)
        results.append(result)
    if dedup is not None:
        texts = [piece["text"] for result in results for piece in result["pieces"]]
        sigs = {text_key(t): entry for t, entry in zip(texts, chunk_signed(texts, dedup), strict=True)}
    return results, sigs


def _batches(tasks: list[tuple[str, str, str]], workers: int) -> list[list[tuple[str, str, str]]]:
    total = sum(len(t[1]) for t in tasks)
    limit = max(MIN_BATCH_BYTES, min(BATCH_BYTES, total // (4 * workers)))
    batches: list[list[tuple[str, str, str]]] = [[]]
    size = 0
    for task in tasks:
        if batches[-1] and size + len(task[1]) > limit:
            batches.append([])
            size = 0
        batches[-1].append(task)
        size += len(task[1])
    return [b for b in batches if b]


def _is_file_chunks(value: object) -> bool:
    """Whether a cache entry has the shape ``FileChunks`` stores (anything else is a miss)."""
    return isinstance(value, dict) and set(value) == {"mode", "pieces", "dropped_punctuation"} \
        and isinstance(value["pieces"], list)


def chunk_files(files: list[SourceFile], settings: ChunkingSettings, cache_dir: str | Path | None = None,
                workers: int = 2, parallel_min_bytes: int = PARALLEL_MIN_BYTES,
                dedup: DedupSettings | None = None) -> tuple[list[Chunk], ChunkingStats]:
    """Chunk many files: cached results for unchanged blobs, the rest in ``workers`` processes.

    Output order follows ``files`` (then line order), whatever the number of workers. With ``dedup``
    the workers also compute the MinHash signatures of the chunks they cut (``stats.signatures``).
    """
    cache = ChunkCache(cache_dir) if cache_dir is not None else None
    keys = [cache_key(f.sha, f.text, f.language, settings, CHUNKER_VERSION) for f in files]
    results: dict[str, dict] = {}
    stats = ChunkingStats(files=len(files))
    todo: dict[str, tuple[str, str, str]] = {}
    for f, key in zip(files, keys, strict=True):
        if key in results or key in todo:
            continue
        cached = cache.get(key) if cache is not None else None
        if cached is not None and _is_file_chunks(cached):
            results[key] = cached
            stats.cache_hits += 1
        else:
            todo[key] = (key, f.text, f.language)
    batches = _batches(list(todo.values()), workers)
    root = str(cache.root) if cache is not None else None
    n = len(batches)
    if workers > 1 and n > 1 and sum(len(t[1]) for t in todo.values()) >= parallel_min_bytes:
        outputs = list(shared_pool(workers).map(_chunk_batch, batches, [settings] * n, [root] * n, [dedup] * n))
    else:
        outputs = [_chunk_batch(batch, settings, root, dedup) for batch in batches]
    for batch, (output, sigs) in zip(batches, outputs, strict=True):
        stats.signatures.update(sigs)
        for (key, _, _), result in zip(batch, output, strict=True):
            results[key] = result
    chunks: list[Chunk] = []
    modes: dict[str, int] = {}
    for f, key in zip(files, keys, strict=True):
        result = FileChunks(**results[key])
        modes[result.mode] = modes.get(result.mode, 0) + 1
        stats.dropped_punctuation += result.dropped_punctuation
        chunks += assemble(f, result)
    stats.modes = dict(sorted(modes.items()))
    return chunks, stats
