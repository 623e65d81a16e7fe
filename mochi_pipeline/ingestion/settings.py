"""Settings of the ingestion layer (the ``repo`` and ``sources`` sections of mochi.yaml)."""

from __future__ import annotations

from pydantic import Field

from mochi_pipeline.settings_base import Section


class RepoSettings(Section):
    source: str = Field(
        ".",
        description="Local path (relative to mochi.yaml) or remote URL (https://, ssh://, git@host:path) "
        "of the repository.",
    )
    rev: str = Field("HEAD", description="Branch, tag or commit to read.")
    max_commits: int = Field(2000, ge=0, description="How many commits of history to read (newest first).")
    max_diff_bytes: int = Field(
        200_000, gt=0, description="A file diff larger than this keeps its line counts but not its text."
    )
    git_timeout_s: float = Field(600, gt=0, description="Seconds a clone or fetch of a remote may take.")


class SourceSettings(Section):
    include: list[str] = Field(
        default_factory=lambda: ["**"],
        description="Glob patterns of files to read ('**' spans directories; "
        "a pattern without '/' matches file names).",
    )
    exclude: list[str] = Field(
        default_factory=lambda: [
            "**/node_modules/**", "**/vendor/**", "**/*.min.js", "**/*.lock", "**/package-lock.json",
        ],
        description="Glob patterns of files to skip.",
    )
    max_file_bytes: int = Field(1_000_000, gt=0, description="Files larger than this are skipped (counted).")
