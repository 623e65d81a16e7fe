"""Dagster assets of the ingestion layer (thin wrappers over the logic modules beside this file).

``build_defs`` makes them from the two sections of mochi.yaml this layer reads. The commit a run
reads is pinned once: the run's ``mochi/commit`` tag (``mochi run`` observes, then tags), else the
last observation of ``git_repository`` made before the run was created (the commit sensor's, or
the UI's "Observe"), else, on an instance that never observed it, the observation the run's first
step records. Every asset of one run so reads the same commit, the one Dagster records as its input.
"""

from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import datetime

import dagster as dg

from mochi_pipeline.dagster_internals import forget_input_version
from mochi_pipeline.incremental import DATA_VERSION_TAG, checked, earlier, reuse
from mochi_pipeline.ingestion.ci_logs import CIError, GitHubActionsLogs, GitLabCILogs, merge_failures
from mochi_pipeline.ingestion.ci_logs import cursor as failure_cursor
from mochi_pipeline.ingestion.git_connector import Ref, Repository, open_repository, tags_by_commit
from mochi_pipeline.ingestion.git_history import with_tags
from mochi_pipeline.ingestion.git_urls import GitError, is_remote_source, redact
from mochi_pipeline.ingestion.issue_tracker import (
    GitHubTracker,
    GitLabTracker,
    JiraTracker,
    TrackerError,
    merge_threads,
)
from mochi_pipeline.ingestion.issue_tracker import cursor as thread_cursor
from mochi_pipeline.ingestion.settings import CISettings, RepoSettings, SourceSettings, TrackerSettings
from mochi_pipeline.ingestion.source_loader import load_source_files
from mochi_pipeline.io_manager import ArtifactError
from mochi_pipeline.metadata import md_table, records_hash
from mochi_pipeline.paths import ProjectPaths
from mochi_pipeline.records import Commit
from mochi_pipeline.storage import content_hash

GROUP = "ingestion"
LOGIC_VERSION = "2"
TRACKER_VERSION = "1"
PREVIEW_ROWS = 15
REF_ROWS = 30
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


def _earlier_history(context: dg.AssetExecutionContext, root) -> tuple[list[Commit], list[str]]:
    """The history this asset stored last and the heads it was read from (when its settings are unchanged)."""
    last = earlier(context, root)
    heads = last.materialization.metadata.get("heads") if last is not None else None
    if heads is None:
        return [], []
    try:
        return last.value(), list(heads.value.values())
    except ArtifactError:
        return [], []


def _refs_seen_last(context: dg.AssetExecutionContext, root) -> str | None:
    """The branches-and-tags fingerprint of this asset's last materialization (when its settings are unchanged)."""
    last = earlier(context, root)
    seen = last.materialization.metadata.get("refs_fingerprint") if last is not None else None
    return seen.value if seen is not None else None


def _refs_table(refs: list[Ref]) -> str:
    """Branches by name, then tags newest first, at most REF_ROWS rows."""
    branches = [r for r in refs if r.kind == "branch"]
    tags = sorted((r for r in refs if r.kind == "tag"), key=lambda r: datetime.fromisoformat(r.date), reverse=True)
    shown = (branches + tags)[:REF_ROWS]
    table = md_table(["kind", "name", "commit", "date"], [(r.kind, r.name, r.sha[:10], r.date) for r in shown])
    return table + (f"\n\n_and {len(refs) - len(shown)} more_" if len(refs) > len(shown) else "")


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
        code_version=f"{LOGIC_VERSION}-{repo.signature('max_commits', 'max_diff_bytes', 'branches')}",
        retry_policy=retries,
    )
    def commit_history(context: dg.AssetExecutionContext) -> Iterator:
        """Up to repo.max_commits commits reachable from repo.rev or repo.branches (each once), newest first,
        merges included.

        Each commit carries its author, date, full message, parents, tags and per-file status, line
        counts and unified diff (merges: against the first parent). The metadata lists the branches and tags.
        """
        sha = pinned_commit(context, repo, paths)
        repository = read_at(repo, paths, sha)
        try:
            refs = repository.refs()
            # repo.rev at the pinned commit even when it is also listed in repo.branches.
            heads = {repo.rev: sha} | {b: h for b, h in repository.branch_heads(repo.branches).items() if b != repo.rev}
        except GitError as err:
            raise _failure(err) from None
        tags = tags_by_commit(refs)
        # The branches read and every tag: a moved branch or a new tag is a change even when repo.rev is not.
        fingerprint = content_hash(*(f"head {name}={head}" for name, head in heads.items()),
                                   *(f"tag {name}={commit}" for commit, names in tags.items() for name in names))
        if (_refs_seen_last(context, root) == fingerprint
                and (events := reuse(context, root, inputs={REPOSITORY: sha})) is not None):
            yield from events
            return
        earlier, earlier_heads = _earlier_history(context, root)
        revs = list(dict.fromkeys(heads.values()))
        try:
            if earlier_heads and repository.all_reachable(earlier_heads, revs):
                # Only what is new since the history read last time; the rest is that history (tags as they are now).
                new = list(repository.iter_commits(revs, repo.max_commits, repo.max_diff_bytes, since=earlier_heads))
                commits: list[Commit] = with_tags(new + earlier, tags)[:repo.max_commits]
                context.log.info(f"Read {len(new)} new commits from {', '.join(heads)} (since the last read)")
            else:
                commits = list(repository.iter_commits(revs, repo.max_commits, max_diff_bytes=repo.max_diff_bytes))
                context.log.info(f"Read {len(commits)} commits from {', '.join(heads)}")
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
            "heads": dg.MetadataValue.json(heads),
            "branches": sum(r.kind == "branch" for r in refs),
            "tags": sum(r.kind == "tag" for r in refs),
            "refs": dg.MetadataValue.md(_refs_table(refs)),
            "refs_fingerprint": fingerprint,
        })
        yield output

    return dg.Definitions(assets=[git_repository, source_files, commit_history])


# --- issue trackers and CI logs ---------------------------------------------------------------


class _ServiceResource(dg.ConfigurableResource):
    """Connection settings of one tracker or CI system; the token comes from an environment variable."""

    token: str
    timeout_s: float = 30
    max_retries: int = 5


class GitHubTrackerResource(_ServiceResource):
    """Issues and pull requests of a GitHub repository (PyGithub)."""

    repo: str
    url: str = "https://api.github.com"
    discussions: bool = True

    def client(self) -> GitHubTracker:
        return GitHubTracker(self.repo, self.token, self.url, timeout_s=self.timeout_s,
                             max_retries=self.max_retries, discussions=self.discussions)


class GitLabTrackerResource(_ServiceResource):
    """Issues and merge requests of a GitLab project (python-gitlab)."""

    project: str
    url: str = "https://gitlab.com"

    def client(self) -> GitLabTracker:
        return GitLabTracker(self.project, self.token, self.url, timeout_s=self.timeout_s,
                             max_retries=self.max_retries)


class JiraTrackerResource(_ServiceResource):
    """Issues of a Jira project (the jira package); Cloud with e-mail + API token, Server/DC with a PAT."""

    project: str
    url: str
    email: str = ""

    def client(self) -> JiraTracker:
        return JiraTracker(self.project, self.url, self.token, email=self.email, timeout_s=self.timeout_s,
                           max_retries=self.max_retries)


class GitHubActionsResource(_ServiceResource):
    """Failed GitHub Actions jobs of a repository (PyGithub)."""

    repo: str
    url: str = "https://api.github.com"
    max_runs: int = 200

    def client(self) -> GitHubActionsLogs:
        return GitHubActionsLogs(self.repo, self.token, self.url, timeout_s=self.timeout_s,
                                 max_retries=self.max_retries, max_runs=self.max_runs)


class GitLabCIResource(_ServiceResource):
    """Failed GitLab CI jobs of a project (python-gitlab)."""

    project: str
    url: str = "https://gitlab.com"
    max_runs: int = 200

    def client(self) -> GitLabCILogs:
        return GitLabCILogs(self.project, self.token, self.url, timeout_s=self.timeout_s,
                            max_retries=self.max_retries, max_runs=self.max_runs)


class MissingToken(ValueError):
    """An enabled service whose token variable is not set, worded for the person."""


SERVICES = (  # resource key, its mochi.yaml section, the resource, the section's fields it takes
    ("github_tracker", "trackers.github", GitHubTrackerResource, ("repo", "url", "discussions")),
    ("gitlab_tracker", "trackers.gitlab", GitLabTrackerResource, ("project", "url")),
    ("jira_tracker", "trackers.jira", JiraTrackerResource, ("project", "url", "email")),
    ("github_actions", "ci.github_actions", GitHubActionsResource, ("repo", "url", "max_runs")),
    ("gitlab_ci", "ci.gitlab_ci", GitLabCIResource, ("project", "url", "max_runs")),
)
SETTING = {key: setting for key, setting, _, _ in SERVICES}


def service_resources(trackers: TrackerSettings, ci: CISettings,
                      environ: Mapping[str, str] | None = None) -> dict[str, _ServiceResource]:
    """A resource per enabled service, keyed like ``SERVICES``.

    Without ``environ`` each token stays a ``dg.EnvVar``, read when a run starts (Definitions); with it
    the token is read now (the CLI and the sensor, which observe outside a run).
    """
    sections = {"trackers": trackers, "ci": ci}
    resources: dict[str, _ServiceResource] = {}
    for key, setting, kind, fields in SERVICES:
        group, name = setting.split(".")
        section = getattr(sections[group], name)
        if not section.enabled:
            continue
        token = dg.EnvVar(section.token_env) if environ is None else environ.get(section.token_env, "")
        if environ is not None and not token:
            raise MissingToken(f"{setting} is on, but the environment variable {section.token_env} "
                               f"({setting}.token_env) is not set. Export the token in it, or turn {setting} off "
                               f"({setting}.{fields[0]}: '' in mochi.yaml).")
        resources[key] = kind(token=token, timeout_s=section.timeout_s, max_retries=section.max_retries,
                              **{f: getattr(section, f) for f in fields})
    return resources


TRACKER_KEYS = ("github_tracker", "gitlab_tracker", "jira_tracker")
CI_KEYS = ("github_actions", "gitlab_ci")
ACTIVITY = dg.AssetKey("tracker_activity")


def observe_activity(resources: Mapping[str, _ServiceResource]) -> tuple[str, dict]:
    """A data version that moves when any service changed (its newest update), and metadata saying when."""
    latest = {}
    for key, resource in resources.items():
        try:
            latest[SETTING[key]] = resource.client().latest_update() or ""
        except (TrackerError, CIError) as err:
            raise _service_failure(err) from None
    version = content_hash(*(f"{k}={v}" for k, v in sorted(latest.items())))[:16] if latest else "off"
    return version, {"latest_update": dg.MetadataValue.json(latest) if latest else "no tracker or CI system set"}


def record_activity(instance: dg.DagsterInstance, version: str, metadata: dict) -> None:
    """Record an observation of tracker_activity outside a run (the CLI, the tracker sensor)."""
    instance.report_runless_asset_event(dg.AssetObservation(ACTIVITY, tags={DATA_VERSION_TAG: version},
                                                            metadata=metadata))


def _service_failure(err: TrackerError | CIError) -> dg.Failure:
    return dg.Failure(description=str(err), allow_retries=err.retryable)


def _kinds(keys: list[str]) -> set[str]:
    """The services an asset reads, as Dagster kinds (icons in the UI)."""
    return {key.split("_")[0] for key in keys} or {"python"}


def build_tracker_defs(trackers: TrackerSettings, ci: CISettings, paths: ProjectPaths) -> dg.Definitions:
    """``tracker_activity`` (observed), ``issue_threads`` and ``ci_failures``; empty lists while none is set."""
    root = paths.artifacts
    resources = service_resources(trackers, ci)
    tracker_keys = [k for k in TRACKER_KEYS if k in resources]
    ci_keys = [k for k in CI_KEYS if k in resources]

    @dg.observable_source_asset(
        name="tracker_activity",
        group_name=GROUP,
        required_resource_keys=set(resources),
        description="When the configured issue trackers and CI systems last changed (one cheap request each); "
                    "its data version moves when they do, so issue_threads and ci_failures go stale.",
    )
    def tracker_activity(context) -> dg.ObserveResult:
        version, metadata = observe_activity({key: getattr(context.resources, key) for key in resources})
        return dg.ObserveResult(data_version=dg.DataVersion(version), metadata=metadata)

    def fetch(context, keys: list[str], start: str, merge, cursor_of, read) -> tuple[list, dict[str, int]]:
        """The stored items updated by what each service changed since its cursor (all of it the first time)."""
        last = earlier(context, root)
        items = last.value() if last is not None else []
        fetched = {}
        for key in keys:
            client = getattr(context.resources, key).client()
            since = cursor_of(items, client.name) or start or None
            context.log.info(f"Reading {SETTING[key]} updated since {since or 'the beginning'}")
            fresh = []
            try:
                for item in read(client, since):
                    fresh.append(item)
                    if len(fresh) % 200 == 0:
                        context.log.info(f"{SETTING[key]}: {len(fresh)} read so far")
            except (TrackerError, CIError) as err:
                raise _service_failure(err) from None
            items = merge(items, fresh)
            fetched[client.name] = len(fresh)
        return items, fetched

    @dg.asset(
        group_name=GROUP,
        deps=[tracker_activity],
        kinds=_kinds(tracker_keys),
        code_version=f"{TRACKER_VERSION}-{trackers.signature()}",
        required_resource_keys=set(tracker_keys),
        retry_policy=NETWORK_RETRIES if tracker_keys else None,
    )
    def issue_threads(context: dg.AssetExecutionContext) -> dg.Output:
        """Issues and pull/merge requests of the configured trackers, with their comments, reviews, labels,
        state and what closed them. Incremental: each run reads only what changed since the last one.
        Empty while trackers.github.repo, trackers.gitlab.project and trackers.jira.project are all ''."""
        threads, fetched = fetch(context, tracker_keys, trackers.start_date, merge_threads, thread_cursor,
                                 lambda client, since: client.threads(since))
        counts = Counter(f"{t.tracker} {t.kind}" for t in threads)
        return dg.Output(threads, data_version=dg.DataVersion(records_hash(threads)), metadata={
            "threads": len(threads),
            "by_tracker_and_kind": dg.MetadataValue.json(dict(sorted(counts.items()))),
            "comments": sum(len(t.comments) for t in threads),
            "fetched_this_run": dg.MetadataValue.json(fetched),
            "trackers": ", ".join(SETTING[k] for k in tracker_keys) or "none set (trackers.* in mochi.yaml)",
            # Counts only: titles and bodies are scrubbed and pseudonymised by clean_issue_threads.
        })

    @dg.asset(
        group_name=GROUP,
        deps=[tracker_activity],
        kinds=_kinds(ci_keys),
        code_version=f"{TRACKER_VERSION}-{ci.signature()}",
        required_resource_keys=set(ci_keys),
        retry_policy=NETWORK_RETRIES if ci_keys else None,
    )
    def ci_failures(context: dg.AssetExecutionContext) -> dg.Output:
        """Failed CI jobs of the configured systems, each reduced to its error excerpt and linked to the commit
        whose run of the same job passed next. Empty while ci.github_actions.repo and ci.gitlab_ci.project are ''."""
        failures, fetched = fetch(context, ci_keys, ci.start_date, merge_failures, failure_cursor,
                                  lambda client, since: client.failures(since))
        return dg.Output(failures, data_version=dg.DataVersion(records_hash(failures)), metadata={
            "failures": len(failures),
            "fixed": sum(bool(f.fixed_by) for f in failures),
            "by_system": dg.MetadataValue.json(dict(Counter(f.system for f in failures))),
            "by_job": dg.MetadataValue.json(dict(Counter(f.job for f in failures).most_common(15))),
            "fetched_this_run": dg.MetadataValue.json(fetched),
            "systems": ", ".join(SETTING[k] for k in ci_keys) or "none set (ci.* in mochi.yaml)",
        })

    return dg.Definitions(assets=[tracker_activity, issue_threads, ci_failures], resources=resources)
