"""Dagster assets of the preprocessing layer (thin wrappers over the logic modules beside this file).

``build_defs`` makes them from the ``filters``, ``scrub``, ``threads``, ``chunking`` and ``dedup``
sections of mochi.yaml; each asset's code version names its logic and the settings it reads.
Everything after ``clean_files``, ``clean_commits``, ``clean_issue_threads`` and ``clean_ci_failures``
sees only filtered, scrubbed text.
"""

import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import PurePosixPath

import dagster as dg
from pydantic import Field

from mochi_pipeline.incremental import INPUT_HASH_KEY, REUSED_KEY, checked, chunked_before, reuse
from mochi_pipeline.ingestion.doc_parser import parse_document
from mochi_pipeline.ingestion.languages import DOC_LANGUAGES
from mochi_pipeline.io_manager import Unchanged, partition_base, read_asset_file, stored_file
from mochi_pipeline.metadata import md_table, records_hash
from mochi_pipeline.paths import ProjectPaths
from mochi_pipeline.preprocessing import cleaning, thread_cleaning
from mochi_pipeline.preprocessing.cleaning import CLEANER_VERSION, CleanStats
from mochi_pipeline.preprocessing.code_chunker import CHUNKER_VERSION, chunk_files
from mochi_pipeline.preprocessing.code_partitions import partition_of
from mochi_pipeline.preprocessing.conventions import mine_conventions
from mochi_pipeline.preprocessing.deduplicator import deduplicate, signature_store
from mochi_pipeline.preprocessing.doc_normalizer import normalize_section
from mochi_pipeline.preprocessing.settings import (
    ChunkingSettings,
    DedupSettings,
    FilterSettings,
    ScrubSettings,
    ThreadCleaningSettings,
)
from mochi_pipeline.preprocessing.thread_cleaning import THREAD_CLEANER_VERSION
from mochi_pipeline.records import Chunk, CIFailure, Commit, DocSection, IssueThread, SourceFile
from mochi_pipeline.storage import content_hash

GROUP = "preprocessing"
# code_chunks' partitions: the directories holding code at the observed commit (see code_partitions.py).
CODE_PARTITIONS = dg.DynamicPartitionsDefinition(name="code_directories")
PREVIEW_ROWS = 20
NORMALIZER_VERSION = "1"
CONVENTIONS_VERSION = "1"
DEDUP_VERSION = "1"
# Plain-text files (language "text") count as documentation only under these names or in docs folders.
TEXT_DOC_STEMS = frozenset({"README", "CHANGELOG", "CHANGES", "HISTORY", "NEWS", "CONTRIBUTING", "INSTALL"})
TEXT_DOC_DIRS = frozenset({"doc", "docs", "documentation"})


class PreprocessingRunConfig(dg.Config):
    workers: int = Field(2, ge=1, description="Processes that parse files and compute MinHash signatures.")


def _is_text_doc(path: str) -> bool:
    p = PurePosixPath(path)
    return p.stem.upper() in TEXT_DOC_STEMS or any(part.lower() in TEXT_DOC_DIRS for part in p.parts[:-1])


def _chunk_preview(chunks: Sequence[Chunk]) -> str:
    return md_table(["path", "symbol", "kind", "lines", "tokens"],
                     [(c.path, c.symbol, c.kind, f"{c.start_line}-{c.end_line}", c.n_tokens)
                      for c in chunks[:PREVIEW_ROWS]])


def _clean_metadata(stats: CleanStats, before: int, after: int, what: str) -> dict:
    return {
        what: after,
        "input": before,
        "dropped_by_reason": dg.MetadataValue.json(dict(sorted(stats.dropped.items()))),
        "replaced_by_type": dg.MetadataValue.json(dict(sorted(stats.replaced.items()))),
        "replacements": sum(stats.replaced.values()),
        f"{what}_changed": stats.changed,
        "cache_hits": stats.cache_hits,
    }


def _as_metadata(values: dict[str, object]) -> dict[str, object]:
    """Counts for the UI: per-reason tables as JSON, plain numbers as they are."""
    return {k: dg.MetadataValue.json(v) if isinstance(v, dict) else v for k, v in values.items()}


def partition_requests(instance: dg.DagsterInstance, keys: Sequence[str]) -> list:
    """The requests that make code_chunks' partitions exactly ``keys`` (new directories added, gone ones removed)."""
    now = set(instance.get_dynamic_partitions(CODE_PARTITIONS.name))
    requests: list = []
    if added := [k for k in keys if k not in now]:
        requests.append(CODE_PARTITIONS.build_add_request(added))
    if removed := sorted(now - set(keys)):
        requests.append(CODE_PARTITIONS.build_delete_request(removed))
    return requests


def register_code_partitions(instance: dg.DagsterInstance, keys: Sequence[str]) -> None:
    """Make code_chunks' partitions exactly ``keys`` now (what the commit sensor's requests do on its tick)."""
    for request in partition_requests(instance, keys):
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)


def build_defs(chunking: ChunkingSettings, dedup: DedupSettings, filters: FilterSettings, scrub: ScrubSettings,
               threads: ThreadCleaningSettings, paths: ProjectPaths) -> dg.Definitions:
    root = paths.artifacts

    @dg.asset(
        group_name=GROUP,
        kinds={"python"},
        code_version=f"clean{CLEANER_VERSION}-{filters.signature()}-{scrub.signature()}",
        check_specs=[dg.AssetCheckSpec("clean_files_found", asset="clean_files",
                                       description="Some file is left to learn from after filtering.")],
    )
    def clean_files(context: dg.AssetExecutionContext, config: PreprocessingRunConfig,
                    source_files: list[SourceFile]) -> Iterator:
        """The files mochi learns from: vendored, generated, minified, LFS-pointer, unwanted-license and
        nothing-but-secrets files dropped (counted by reason), secrets and personal data in the rest
        replaced by typed placeholders (counted by type; the values are never shown)."""
        if (events := reuse(context, root)) is not None:
            yield from events
            return
        files, stats = cleaning.clean_files(source_files, filters, scrub, root / "cache" / "clean",
                                            workers=config.workers)
        context.log.info(f"{len(files)} of {len(source_files)} files kept; dropped {dict(stats.dropped)}; "
                         f"replaced {dict(stats.replaced)}")
        output = dg.Output(files, data_version=dg.DataVersion(records_hash(files)), metadata={
            **_clean_metadata(stats, len(source_files), len(files), "files"),
            "repository_license": stats.repository_license or "(not recognised)",
        })
        yield from checked(output, [dg.AssetCheckResult(
            check_name="clean_files_found", passed=bool(files), metadata={"files": len(files)},
            description=None if files else "Every file was filtered out; see dropped_by_reason and the filters "
            "section of mochi.yaml.")])

    @dg.asset(group_name=GROUP, kinds={"git"},
              code_version=f"clean{CLEANER_VERSION}-{filters.signature()}-{scrub.signature()}")
    def clean_commits(context: dg.AssetExecutionContext, config: PreprocessingRunConfig,
                      commit_history: list[Commit]) -> Iterator:
        """Commit history with secrets and personal data in messages and diffs replaced by typed placeholders
        (a secret file's diff emptied); counted by type, the values never shown."""
        if (events := reuse(context, root)) is not None:
            yield from events
            return
        commits, stats = cleaning.clean_commits(commit_history, scrub, filters, root / "cache" / "clean",
                                                workers=config.workers)
        context.log.info(f"Scrubbed {len(commits)} commits; replaced {dict(stats.replaced)}")
        preview = md_table(["sha", "date", "subject"], [(c.sha[:10], c.date[:10], c.message.split("\n", 1)[0])
                                                        for c in commits[:PREVIEW_ROWS]])
        yield dg.Output(commits, data_version=dg.DataVersion(records_hash(commits)), metadata={
            **_clean_metadata(stats, len(commit_history), len(commits), "commits"),
            "preview": dg.MetadataValue.md(preview),
        })

    @dg.asset(
        group_name=GROUP,
        kinds={"python", "markdown"},
        code_version=f"normalizer{NORMALIZER_VERSION}",
    )
    def doc_sections(context: dg.AssetExecutionContext, clean_files: list[SourceFile]) -> Iterator:
        """Documentation (Markdown, reStructuredText, AsciiDoc, README-like text) split by heading and normalised.

        Markup noise (badges, link targets, HTML) is removed; code blocks are kept verbatim. Other text
        files (requirements.txt, notes) are skipped and counted.
        """
        if (events := reuse(context, root)) is not None:
            yield from events
            return
        sections: list[DocSection] = []
        skipped: Counter[str] = Counter()
        dropped: Counter[str] = Counter()
        for f in clean_files:
            if f.language not in DOC_LANGUAGES and not (f.language == "text" and _is_text_doc(f.path)):
                skipped["not_documentation"] += 1
                continue
            for section in parse_document(f.path, f.text):
                clean = normalize_section(section)
                if clean.text.strip() or clean.code_blocks:
                    sections.append(clean)
                else:
                    dropped["empty_after_normalisation"] += 1
        context.log.info(f"{len(sections)} doc sections from {len(clean_files) - sum(skipped.values())} documents")
        by_format = dict(sorted(Counter(s.format for s in sections).items()))
        preview = md_table(["path", "heading", "lines", "text"],
                            [(s.path, " / ".join(s.heading_path), f"{s.start_line}-{s.end_line}", s.text)
                             for s in sections[:PREVIEW_ROWS]])
        output = dg.Output(sections, data_version=dg.DataVersion(records_hash(sections)), metadata={
            "sections": len(sections),
            "sections_by_format": dg.MetadataValue.json(by_format),
            "code_blocks": sum(len(s.code_blocks) for s in sections),
            "skipped_files_by_reason": dg.MetadataValue.json(dict(skipped)),
            "dropped_sections_by_reason": dg.MetadataValue.json(dict(dropped)),
            "preview": dg.MetadataValue.md(preview),
        })
        yield output

    @dg.asset(group_name=GROUP, kinds={"python"}, code_version=f"conventions{CONVENTIONS_VERSION}")
    def project_conventions(context: dg.AssetExecutionContext, clean_files: list[SourceFile]) -> Iterator:
        """How this project writes code (indentation, line length, naming, quotes, imports, error handling,
        test layout), each with the share of the code that follows it: what `verify` checks new code against
        and what `enhance` tells a large model."""
        if (events := reuse(context, root)) is not None:
            yield from events
            return
        conventions = mine_conventions(clean_files)
        summary = conventions.markdown()
        context.log.info(f"Conventions of {sum(c.files for c in conventions.languages)} source files mined")
        yield dg.Output(conventions, data_version=dg.DataVersion(records_hash([conventions])), metadata={
            "languages": dg.MetadataValue.json({c.language: c.files for c in conventions.languages}),
            "summary": dg.MetadataValue.md(summary or "no source file in a language mochi parses"),
        })

    @dg.asset(
        group_name=GROUP,
        kinds={"python"},
        code_version=f"chunker{CHUNKER_VERSION}-{chunking.signature()}",
        partitions_def=CODE_PARTITIONS,
        backfill_policy=dg.BackfillPolicy.multi_run(chunking.partitions_per_run),
        check_specs=[
            dg.AssetCheckSpec("code_chunks_cover_every_directory", asset="code_chunks",
                              description="Every directory holding code has a partition (registered by the "
                              "commit sensor and by every mochi command)."),
        ],
    )
    def code_chunks(context: dg.AssetExecutionContext, config: PreprocessingRunConfig,
                    clean_files: list[SourceFile]) -> Iterator:
        """Source files cut along syntax (tree-sitter) into functions, classes and module code within a token budget.

        Partitioned by directory (``chunking.partition_depth``). Each chunk carries a context header (file,
        module docstring, imports it uses, enclosing class). A partition whose files are the same as when it was
        last chunked is reused; the others are chunked with a cache per file blob under <artifacts>/cache/chunks.
        """
        wanted = list(context.partition_keys)
        registered = set(context.instance.get_dynamic_partitions(CODE_PARTITIONS.name))
        files: dict[str, list[SourceFile]] = {p: [] for p in wanted}
        skipped: Counter[str] = Counter()
        unregistered: Counter[str] = Counter()
        for f in clean_files:
            partition = partition_of(f.path, chunking.partition_depth)
            if f.language in DOC_LANGUAGES:
                skipped["documentation"] += 1
            elif f.language in chunking.exclude_languages:
                skipped[f"excluded_language:{f.language}"] += 1
            elif partition in files:
                files[partition].append(f)
            elif partition not in registered:
                unregistered[partition] += 1
        inputs = {p: records_hash(files[p]) for p in wanted}
        reused = {p: run for p in wanted if (run := chunked_before(context, p, inputs[p], root)) is not None}
        todo = [f for p in wanted if p not in reused for f in files[p]]
        # The workers also sign each new chunk for deduplicated_chunks (a cache: not part of this output).
        new, stats = chunk_files(todo, chunking, root / "cache" / "chunks", workers=config.workers, dedup=dedup)
        signature_store(root / "cache", dedup).add(stats.signatures)
        by_partition: dict[str, list[Chunk]] = {p: [] for p in wanted if p not in reused}
        for c in new:
            by_partition[partition_of(c.path, chunking.partition_depth)].append(c)
        for p in reused:
            by_partition[p] = read_asset_file(stored_file(partition_base(root, context.asset_key, p)))
        chunks = [c for p in wanted for c in by_partition[p]]
        for p in wanted:  # each partition's materialization describes that partition
            part = by_partition[p]
            context.add_asset_metadata({
                "chunks": len(part),
                "files": len(files[p]),
                "chunks_by_language": dg.MetadataValue.json(dict(sorted(Counter(c.language for c in part).items()))),
                "chunks_by_kind": dg.MetadataValue.json(dict(sorted(Counter(c.kind for c in part).items()))),
                "max_tokens_seen": max((c.n_tokens for c in part), default=0),
                "preview": dg.MetadataValue.md(_chunk_preview(part)),
                INPUT_HASH_KEY: inputs[p],
                **({REUSED_KEY: reused[p]} if p in reused else {}),
            }, partition_key=p)
        rechunked = [p for p in wanted if p not in reused]
        context.log.info(f"{len(chunks)} chunks in {len(wanted)} partition(s); chunked {len(rechunked)} "
                         f"({', '.join(rechunked[:10]) or 'none'}), {len(reused)} unchanged since they were last "
                         f"chunked; {stats.cache_hits} of {len(todo)} files from the cache")
        output = dg.Output(  # the run's own numbers; Dagster keeps one data version for the run's partitions
            {p: Unchanged(run_id=reused[p]) if p in reused else by_partition[p] for p in wanted},
            data_version=dg.DataVersion(content_hash(*(f"{p}:{records_hash(by_partition[p])}" for p in wanted))),
            metadata={
                "partitions_in_run": len(wanted),
                "rechunked_partitions": dg.MetadataValue.json(rechunked),
                "reused_partitions": len(reused),
                "cache_hits": stats.cache_hits,
                "files_by_mode": dg.MetadataValue.json(stats.modes),
                "skipped_files_by_reason": dg.MetadataValue.json(dict(sorted(skipped.items()))),
                "dropped_by_reason": dg.MetadataValue.json({"punctuation_only": stats.dropped_punctuation}),
            })
        missing = dict(sorted(unregistered.items()))
        yield from checked(output, [
            dg.AssetCheckResult(
                check_name="code_chunks_cover_every_directory", passed=not missing,
                metadata={"files_by_unregistered_directory": dg.MetadataValue.json(missing)},
                description=None if not missing else f"{sum(missing.values())} code file(s) in {', '.join(missing)} "
                "belong to no partition of code_chunks, so no chunk is cut from them. Run `mochi run` (or turn on "
                "new_commit_sensor), which registers the directories of the current commit, then materialize the "
                "new partitions."),
        ])

    @dg.asset(
        group_name=GROUP,
        kinds={"python"},
        code_version=f"dedup{DEDUP_VERSION}-{dedup.signature()}",
    )
    def deduplicated_chunks(context: dg.AssetExecutionContext, config: PreprocessingRunConfig,
                            code_chunks: list[Chunk]) -> Iterator:
        """Code chunks without exact or near duplicates (MinHash LSH), one representative kept per cluster.

        The representative is the chunk from the oldest file, then the shortest path, then the earliest line.
        """
        if (events := reuse(context, root)) is not None:
            yield from events
            return
        store = signature_store(root / "cache", dedup)
        result = deduplicate(code_chunks, dedup, known=store.load(), workers=config.workers)
        store.save(result.signatures)  # only what the current chunks need: the store does not grow forever
        context.log.info(f"Kept {len(result.kept)} of {result.total} chunks; dropped {result.dropped}")
        by_id = {c.id: c for c in code_chunks}
        largest = sorted(result.clusters, key=lambda ids: (-len(ids), ids[0]))[:PREVIEW_ROWS]
        clusters_md = md_table(
            ["size", "kept", "dropped (first 3)"],
            [(len(ids), f"{by_id[ids[0]].path}:{by_id[ids[0]].start_line} {by_id[ids[0]].symbol}",
              ", ".join(f"{by_id[i].path}:{by_id[i].start_line}" for i in ids[1:4])) for ids in largest],
        )
        output = dg.Output(result.kept, data_version=dg.DataVersion(records_hash(result.kept)), metadata={
            "kept": len(result.kept),
            "input": result.total,
            "dropped_by_reason": dg.MetadataValue.json(result.dropped),
            "dedup_rate": round(result.dedup_rate, 4),
            "clusters": len(result.clusters),
            "cluster_size_histogram": dg.MetadataValue.json({str(k): v for k, v in
                                                             result.cluster_size_histogram().items()}),
            "largest_clusters": dg.MetadataValue.md(clusters_md),
            "preview": dg.MetadataValue.md(_chunk_preview(result.kept)),
        })
        yield output

    @dg.asset(group_name=GROUP, kinds={"python"},
              code_version=f"threads{THREAD_CLEANER_VERSION}-{threads.signature()}-{scrub.signature()}")
    def clean_issue_threads(context: dg.AssetExecutionContext, issue_threads: list[IssueThread]) -> Iterator:
        """Issue and pull/merge request threads worth learning from: bot accounts dropped, user names
        pseudonymised consistently, quoted replies and templates trimmed, too short or huge threads dropped,
        secrets and personal data replaced by typed placeholders; every drop counted by reason."""
        if (events := reuse(context, root)) is not None:
            yield from events
            return
        # Read at run time, never at import: a secret mixed into the pseudonyms so they cannot be confirmed.
        secret = os.environ.get(threads.pseudonym_key_env, "")
        cleaned, stats = thread_cleaning.clean_issue_threads(issue_threads, threads, scrub, secret=secret)
        context.log.info(f"Kept {len(cleaned)} of {len(issue_threads)} threads; dropped {dict(stats.dropped)}")
        preview = md_table(["thread", "kind", "state", "comments", "title"],
                           [(f"{t.tracker}:{t.project}#{t.number}", t.kind, t.state, len(t.comments), t.title)
                            for t in cleaned[:PREVIEW_ROWS]])
        yield dg.Output(cleaned, data_version=dg.DataVersion(records_hash(cleaned)), metadata={
            "threads": len(cleaned),
            "input": len(issue_threads),
            **_as_metadata(stats.metadata()),
            "pseudonym_key": "secret" if secret else f"project name only ({threads.pseudonym_key_env} not set)",
            "preview": dg.MetadataValue.md(preview),
        })

    @dg.asset(group_name=GROUP, kinds={"python"},
              code_version=f"threads{THREAD_CLEANER_VERSION}-{threads.signature()}-{scrub.signature()}")
    def clean_ci_failures(context: dg.AssetExecutionContext, ci_failures: list[CIFailure]) -> Iterator:
        """Failed CI jobs whose error excerpts passed the scrubber (tokens, addresses, user names in paths)."""
        if (events := reuse(context, root)) is not None:
            yield from events
            return
        cleaned, stats = thread_cleaning.clean_ci_failures(ci_failures, scrub, threads)
        preview = md_table(["system", "job", "commit", "fixed by"],
                           [(f.system, f.job, f.commit[:10], f.fixed_by[:10] or "-") for f in cleaned[:PREVIEW_ROWS]])
        yield dg.Output(cleaned, data_version=dg.DataVersion(records_hash(cleaned)), metadata={
            "failures": len(cleaned),
            "input": len(ci_failures),
            **_as_metadata(stats.metadata()),
            "preview": dg.MetadataValue.md(preview),
        })

    return dg.Definitions(assets=[clean_files, clean_commits, doc_sections, project_conventions, code_chunks,
                                  deduplicated_chunks, clean_issue_threads, clean_ci_failures])
