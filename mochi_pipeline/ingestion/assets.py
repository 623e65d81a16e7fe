"""Dagster assets of the ingestion layer (thin wrappers over the logic modules beside this file)."""

from collections import Counter
from collections.abc import Iterator

import dagster as dg

from mochi_pipeline.ingestion.git_connector import GitError, Repository, open_repository, redact
from mochi_pipeline.ingestion.source_loader import load_source_files
from mochi_pipeline.metadata import md_table, records_hash
from mochi_pipeline.records import Commit
from mochi_pipeline.resources import MochiProject

GROUP = "ingestion"
PREVIEW_ROWS = 15


def _open(project: MochiProject) -> tuple[Repository, str]:
    """The configured repository (remote ones cloned or fetched) and the full SHA of repo.rev."""
    cfg = project.config
    try:
        repo = open_repository(cfg.repo_source, project.artifacts / "repos", timeout_s=cfg.repo.git_timeout_s)
        return repo, repo.resolve_rev(cfg.repo.rev)
    except GitError as err:  # shown in the UI as the failure's description, not a traceback
        raise dg.Failure(description=str(err)) from None


@dg.observable_source_asset(
    group_name=GROUP,
    tags={"dagster/kind/git": ""},
    description="The configured repository at repo.rev; its data version is the commit SHA, so "
    "downstream assets go stale exactly when the code changes.",
)
def git_repository(context: dg.AssetExecutionContext, project: MochiProject) -> dg.ObserveResult:
    repo, sha = _open(project)
    context.log.info(f"{redact(project.config.repo_source)} at {project.config.repo.rev} is {sha}")
    return dg.ObserveResult(
        data_version=dg.DataVersion(sha),
        metadata={"source": redact(project.config.repo_source), "rev": project.config.repo.rev, "commit": sha,
                  "local_path": dg.MetadataValue.path(str(repo.path))},
    )


@dg.asset(
    group_name=GROUP,
    deps=[git_repository],
    kinds={"git", "python"},
    code_version="1",
    check_specs=[dg.AssetCheckSpec("source_files_found", asset="source_files",
                                   description="At least one text file passed the filters.")],
)
def source_files(context: dg.AssetExecutionContext, project: MochiProject) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Tracked text files at repo.rev (filtered by sources.include/exclude), with language and last commit.

    Binary, non-UTF-8, oversized, symlinked and excluded files are skipped and counted by reason.
    """
    repo, sha = _open(project)
    files, skipped = load_source_files(repo, sha, project.config.sources)
    context.log.info(f"Read {len(files)} files at {sha[:12]}; skipped {sum(skipped.values())} ({skipped})")
    by_language = dict(sorted(Counter(f.language for f in files).items()))
    preview = md_table(
        ["path", "language", "bytes", "last change"],
        [(f.path, f.language, f.size, f.last_commit_date[:10]) for f in files[:PREVIEW_ROWS]],
    )
    yield dg.Output(
        files,
        data_version=dg.DataVersion(records_hash(files)),
        metadata={
            "commit": sha,
            "files": len(files),
            "bytes": sum(f.size for f in files),
            "files_by_language": dg.MetadataValue.json(by_language),
            "skipped_by_reason": dg.MetadataValue.json(skipped),
            "skipped": sum(skipped.values()),
            "preview": dg.MetadataValue.md(preview),
        },
    )
    yield dg.AssetCheckResult(
        check_name="source_files_found", asset_key="source_files", passed=bool(files),
        metadata={"files": len(files)},
        description=None if files else "No file passed sources.include/exclude; check those globs in mochi.yaml.",
    )


@dg.asset(
    group_name=GROUP,
    deps=[git_repository],
    kinds={"git", "python"},
    code_version="1",
    check_specs=[dg.AssetCheckSpec("commit_history_starts_at_rev", asset="commit_history",
                                   description="The newest commit read is repo.rev itself.")],
)
def commit_history(
    context: dg.AssetExecutionContext, project: MochiProject
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Up to repo.max_commits commits reachable from repo.rev, newest first, merges included.

    Each commit carries its author, date, full message, parents and per-file status, line counts
    and unified diff (merges: against the first parent).
    """
    cfg = project.config.repo
    repo, sha = _open(project)
    try:
        commits: list[Commit] = list(repo.iter_commits(sha, cfg.max_commits, max_diff_bytes=cfg.max_diff_bytes))
    except GitError as err:
        raise dg.Failure(description=str(err)) from None
    context.log.info(f"Read {len(commits)} commits from {sha[:12]}")
    preview = md_table(
        ["sha", "date", "author", "subject", "files", "+", "-"],
        [(c.sha[:10], c.date[:10], c.author_name, c.message.splitlines()[0] if c.message else "", len(c.files),
          sum(f.additions for f in c.files), sum(f.deletions for f in c.files)) for c in commits[:PREVIEW_ROWS]],
    )
    yield dg.Output(
        commits,
        data_version=dg.DataVersion(records_hash(commits)),
        metadata={
            "commit": sha,
            "commits": len(commits),
            "merges": sum(len(c.parents) > 1 for c in commits),
            "authors": len({c.author_email for c in commits}),
            "files_changed": sum(len(c.files) for c in commits),
            "oldest": commits[-1].date if commits else "",
            "newest": commits[0].date if commits else "",
            "preview": dg.MetadataValue.md(preview),
        },
    )
    starts_at_rev = not commits or commits[0].sha == sha
    yield dg.AssetCheckResult(
        check_name="commit_history_starts_at_rev", asset_key="commit_history", passed=starts_at_rev,
        metadata={"rev_commit": sha, "first_commit": commits[0].sha if commits else ""},
    )


defs = dg.Definitions(assets=[git_repository, source_files, commit_history])
