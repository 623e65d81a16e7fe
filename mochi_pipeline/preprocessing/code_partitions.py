"""Which directory partition of ``code_chunks`` a source file belongs to.

``code_chunks`` is partitioned by directory, so a monorepo's first run can spread over several runs
(and workers) and each partition keeps its own result. A partition key is a file's directory cut to
``chunking.partition_depth`` levels (``src/app``, ``tests``); files at the top of the repository
are in ``ROOT``. The keys come from the repository's tree at a commit, before any run: the commit
sensor and every ``mochi`` command register them (Dagster's dynamic partitions), so a new
directory gets its partition and a deleted one loses it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePosixPath

from mochi_pipeline.ingestion.git_connector import Repository
from mochi_pipeline.ingestion.languages import DOC_LANGUAGES, has_binary_extension, language_for
from mochi_pipeline.ingestion.settings import SourceSettings
from mochi_pipeline.ingestion.source_loader import is_selected
from mochi_pipeline.preprocessing.settings import ChunkingSettings

ROOT = "."  # the partition of files at the top of the repository


def partition_of(path: str, depth: int) -> str:
    """The partition of the file at ``path``: its first ``depth`` directories, '/'-joined (``ROOT`` if none)."""
    parts = PurePosixPath(path).parts[:-1][:depth]
    return "/".join(parts) if parts else ROOT


def is_chunked(path: str, exclude_languages: Iterable[str]) -> bool:
    """Whether ``code_chunks`` cuts the file at ``path`` (a code language mochi does not exclude)."""
    language = language_for(path)
    return not (language in DOC_LANGUAGES or language in set(exclude_languages) or has_binary_extension(path))


def partition_keys(paths: Iterable[str], depth: int, exclude_languages: Iterable[str]) -> list[str]:
    """The partitions that the files at ``paths`` fill, sorted."""
    excluded = list(exclude_languages)
    return sorted({partition_of(p, depth) for p in paths if is_chunked(p, excluded)})


def partitions_at(repository: Repository, sha: str, sources: SourceSettings, chunking: ChunkingSettings) -> list[str]:
    """The partitions at commit ``sha``: the directories of the files source_files reads there (the same
    include/exclude globs) that code_chunks cuts."""
    selected = (e.path for e in repository.list_files(sha) if not e.is_submodule and not e.is_symlink
                and is_selected(e.path, sources.include, sources.exclude))
    return partition_keys(selected, chunking.partition_depth, chunking.exclude_languages)
