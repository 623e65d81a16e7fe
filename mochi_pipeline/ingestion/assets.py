"""Dagster assets of the ingestion layer (thin wrappers over the logic modules beside this file).

``build_defs`` makes them from the two sections of mochi.yaml this layer reads. The commit a run
reads is pinned once: the run's ``mochi/commit`` tag (``mochi run`` observes, then tags), else the
last observation of ``git_repository`` made before the run was created (the commit sensor's, or
the UI's "Observe"), else, on an instance that never observed it, the observation the run's first
step records. Every asset of one run so reads the same commit, the one Dagster records as its input.
"""

from collections import Counter
from collections.abc import Iterator

import dagster as dg

from mochi_pipeline.dagster_internals import forget_input_version
from mochi_pipeline.incremental import DATA_VERSION_TAG, checked, earlier, reuse
from mochi_pipeline.ingestion.git_connector import GitError, Repository, is_remote_source, open_repository, redact
from mochi_pipeline.ingestion.settings import RepoSettings, SourceSettings
from mochi_pipeline.ingestion.source_loader import load_source_files
from mochi_pipeline.io_manager import ArtifactError
from mochi_pipeline.metadata import md_table, records_hash
from mochi_pipeline.paths import ProjectPaths
from mochi_pipeline.records import Commit

GROUP = "ingestion"
LOGIC_VERSION = "2"
PREVIEW_ROWS = 15
REPOSITORY = dg.AssetKey("git_repository")
COMMIT_TAG = "mochi/commit"
# A remote that cannot be reached now may be reachable in a minute; errors that need a fix are not retried.
NETWORK_RETRIES = dg.RetryPolicy(max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def _failure(err: GitError) -> dg.Failure:
    """The failure shown in the UI (its message, not a traceback); retried only when the network may be why."""
    return dg.Failure(description=str(err), allow_retries=err.retryable)


def open_repo(repo: RepoSettings, paths: ProjectPaths, fetch: bool) -> Repository:
    """The configured repository; a remote one is cloned, and fetched when ``fetch``."""
    try:
        return open_repository(paths.repo_source, paths.artifacts / "repos", timeout_s=repo.git_timeout_s,
                               fetch=fetch)
    except GitError as err:
        raise _failure(err) from None


def observe_commit(repo: RepoSettings, paths: ProjectPaths) -> tuple[str, dict]:
    """The commit repo.rev points at now (a remote is fetched first), and metadata describing it."""
    repository = open_repo(repo, paths, fetch=True)
    try:
        sha = repository.resolve_rev(repo.rev)
    except GitError as err:
        raise _failure(err) from None
    return sha, {"source": redact(paths.repo_source), "rev": repo.rev, "commit": sha,
                 "local_path": dg.MetadataValue.path(str(repository.path))}


def record_commit(instance: dg.DagsterInstance, sha: str, metadata: dict) -> None:
    """Record an observation of git_repository outside a run (the CLI, the commit sensor)."""
    instance.report_runless_asset_event(dg.AssetObservation(REPOSITORY, tags={DATA_VERSION_TAG: sha},
                                                            metadata=metadata))


def _observation_version(records) -> str | None:
    return records[0].asset_observation.tags.get(DATA_VERSION_TAG) if records else None


def pinned_commit(context: dg.AssetExecutionContext, repo: RepoSettings, paths: ProjectPaths) -> str:
    """The commit this run reads (see the module docstring)."""
    tagged = context.run.tags.get(COMMIT_TAG)
    if tagged:
        return tagged
    instance = context.instance
    created = instance.get_run_record_by_id(context.run_id).create_timestamp.timestamp()
    before = dg.AssetRecordsFilter(asset_key=REPOSITORY, before_timestamp=created)
    sha = _observation_version(instance.fetch_observations(before, limit=1).records)
    if sha:
        return sha
    after = dg.AssetRecordsFilter(asset_key=REPOSITORY, after_timestamp=created)
    if not instance.fetch_observations(after, limit=1).records:  # never observed: this step observes
        record_commit(instance, *observe_commit(repo, paths))
    forget_input_version(context, REPOSITORY)  # Dagster read it before this run recorded it
    # The first observation since the run began: parallel steps that both observed agree on it.
    return _observation_version(instance.fetch_observations(after, limit=1, ascending=True).records)


def _earlier_history(context: dg.AssetExecutionContext, root) -> tuple[list[Commit], str]:
    """The history this asset stored last and the commit it was read from (when its settings are unchanged)."""
    last = earlier(context, root)
    head = last.materialization.metadata.get("commit") if last is not None else None
    if head is None:
        return [], ""
    try:
        return last.value(), head.value
    except ArtifactError:
        return [], ""


def read_at(repo: RepoSettings, paths: ProjectPaths, sha: str) -> Repository:
    """The repository, holding ``sha`` (a remote clone is fetched only if it lacks it)."""
    repository = open_repo(repo, paths, fetch=False)
    if not repository.has_commit(sha):
        repository = open_repo(repo, paths, fetch=True)
        if not repository.has_commit(sha):
            raise dg.Failure(description=f"Commit {sha} observed earlier is no longer in {redact(paths.repo_source)} "
                                         "(history rewritten?). Run `mochi run` again to read the current one.")
    return repository


def build_defs(repo: RepoSettings, sources: SourceSettings, paths: ProjectPaths) -> dg.Definitions:
    root = paths.artifacts

    @dg.observable_source_asset(
        name="git_repository",
        group_name=GROUP,
        tags={"dagster/kind/git": ""},
        description="The configured repository at repo.rev; its data version is the commit SHA, so downstream "
                    "assets go stale exactly when the code changes.",
    )
    def git_repository(context) -> dg.ObserveResult:
        sha, metadata = observe_commit(repo, paths)
        context.log.info(f"{redact(paths.repo_source)} at {repo.rev} is {sha}")
        return dg.ObserveResult(data_version=dg.DataVersion(sha), metadata=metadata)

    retries = NETWORK_RETRIES if is_remote_source(paths.repo_source) else None

    @dg.asset(
        group_name=GROUP,
        deps=[git_repository],
        kinds={"git", "python"},
        code_version=f"{LOGIC_VERSION}-{sources.signature()}",
        retry_policy=retries,
        check_specs=[dg.AssetCheckSpec("source_files_found", asset="source_files",
                                       description="At least one text file passed the filters.")],
    )
    def source_files(context: dg.AssetExecutionContext) -> Iterator:
        """Tracked text files at repo.rev (filtered by sources.include/exclude), with language and last commit.

        Binary, non-UTF-8, oversized, symlinked and excluded files are skipped and counted by reason.
        """
        sha = pinned_commit(context, repo, paths)
        if (events := reuse(context, root, inputs={REPOSITORY: sha})) is not None:
            yield from events
            return
        files, skipped = load_source_files(read_at(repo, paths, sha), sha, sources)
        context.log.info(f"Read {len(files)} files at {sha[:12]}; skipped {sum(skipped.values())} ({skipped})")
        by_language = dict(sorted(Counter(f.language for f in files).items()))
        preview = md_table(
            ["path", "language", "bytes", "last change"],
            [(f.path, f.language, f.size, f.last_commit_date[:10]) for f in files[:PREVIEW_ROWS]],
        )
        output = dg.Output(files, data_version=dg.DataVersion(records_hash(files)), metadata={
            "commit": sha,
            "files": len(files),
            "bytes": sum(f.size for f in files),
            "files_by_language": dg.MetadataValue.json(by_language),
            "skipped_by_reason": dg.MetadataValue.json(skipped),
            "skipped": sum(skipped.values()),
            "preview": dg.MetadataValue.md(preview),
        })
        yield from checked(output, [dg.AssetCheckResult(
            check_name="source_files_found", passed=bool(files), metadata={"files": len(files)},
            description=None if files else "No file passed sources.include/exclude; check those globs in mochi.yaml.",
        )])

    @dg.asset(
        group_name=GROUP,
        deps=[git_repository],
        kinds={"git", "python"},
        code_version=f"{LOGIC_VERSION}-{repo.signature('max_commits', 'max_diff_bytes')}",
        retry_policy=retries,
        check_specs=[dg.AssetCheckSpec("commit_history_starts_at_rev", asset="commit_history",
                                       description="The newest commit read is repo.rev itself.")],
    )
    def commit_history(context: dg.AssetExecutionContext) -> Iterator:
        """Up to repo.max_commits commits reachable from repo.rev, newest first, merges included.

        Each commit carries its author, date, full message, parents and per-file status, line counts
        and unified diff (merges: against the first parent).
        """
        sha = pinned_commit(context, repo, paths)
        if (events := reuse(context, root, inputs={REPOSITORY: sha})) is not None:
            yield from events
            return
        repository = read_at(repo, paths, sha)
        earlier, earlier_head = _earlier_history(context, root)
        try:
            if earlier_head and repository.is_ancestor(earlier_head, sha):
                # Only what is new since the history read last time; the rest is that history.
                new = list(repository.iter_commits(sha, repo.max_commits, repo.max_diff_bytes, since=earlier_head))
                commits: list[Commit] = (new + earlier)[:repo.max_commits]
                context.log.info(f"Read {len(new)} new commits from {sha[:12]} (since {earlier_head[:12]})")
            else:
                commits = list(repository.iter_commits(sha, repo.max_commits, max_diff_bytes=repo.max_diff_bytes))
                context.log.info(f"Read {len(commits)} commits from {sha[:12]}")
        except GitError as err:
            raise _failure(err) from None
        # Counts only: subjects and authors can hold secrets and personal data (clean_commits shows scrubbed ones).
        preview = md_table(
            ["sha", "date", "files", "+", "-"],
            [(c.sha[:10], c.date[:10], len(c.files), sum(f.additions for f in c.files),
              sum(f.deletions for f in c.files)) for c in commits[:PREVIEW_ROWS]],
        )
        output = dg.Output(commits, data_version=dg.DataVersion(records_hash(commits)), metadata={
            "commit": sha,
            "commits": len(commits),
            "merges": sum(len(c.parents) > 1 for c in commits),
            "authors": len({c.author_email for c in commits}),
            "files_changed": sum(len(c.files) for c in commits),
            "oldest": commits[-1].date if commits else "",
            "newest": commits[0].date if commits else "",
            "preview": dg.MetadataValue.md(preview),
        })
        yield from checked(output, [dg.AssetCheckResult(
            check_name="commit_history_starts_at_rev", passed=not commits or commits[0].sha == sha,
            metadata={"rev_commit": sha, "first_commit": commits[0].sha if commits else ""},
        )])

    return dg.Definitions(assets=[git_repository, source_files, commit_history])
