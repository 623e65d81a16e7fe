"""Settings of the ingestion layer (the ``repo`` and ``sources`` sections of mochi.yaml)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field, field_validator

from mochi_pipeline.settings_base import Section


class RepoSettings(Section):
    source: str = Field(
        ".",
        description="Local path (relative to mochi.yaml) or remote URL (https://, ssh://, git@host:path) "
        "of the repository.",
    )
    rev: str = Field("HEAD", description="Branch, tag or commit to read.")
    branches: list[str] = Field(
        default_factory=list,
        description="More branches whose history commit_history reads besides repo.rev (a commit they share "
        "counts once); [] = repo.rev only. Files are always read at repo.rev.",
    )
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


# --- issue trackers and CI (each off until its repo/project is set) ---------------------------


def _iso_date(value: str) -> str:
    """'' or an ISO-8601 date/time (the first fetch's start), checked when mochi.yaml loads."""
    if value:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("not an ISO-8601 date; write it like 2023-01-31 (or '' for everything)") from None
    return value


class _Service(Section):
    """What every tracker and CI system takes; a subclass adds where it is and ``enabled``."""

    token_env: str = Field(
        "", description="Name of the environment variable holding the access token (read when a run starts; "
        "never written to a log, metadata or artifact)."
    )
    timeout_s: float = Field(30, gt=0, description="Seconds one HTTP request may take.")
    max_retries: int = Field(5, ge=0, description="Retries of a rate-limited or failed request (the client's own).")


class GitHubTrackerSettings(_Service):
    repo: str = Field("", description="owner/name of the GitHub repository whose issues and pull requests to read; "
                      "'' = off.")
    url: str = Field("https://api.github.com", description="API root (GitHub Enterprise: https://HOST/api/v3).")
    token_env: str = Field("GITHUB_TOKEN", description=_Service.model_fields["token_env"].description)
    discussions: bool = Field(True, description="Also read Q&A discussions that have an accepted answer.")

    @property
    def enabled(self) -> bool:
        return bool(self.repo)


class GitLabTrackerSettings(_Service):
    project: str = Field("", description="group/name (or numeric id) of the GitLab project whose issues and merge "
                         "requests to read; '' = off.")
    url: str = Field("https://gitlab.com", description="GitLab instance (self-hosted: its root URL).")
    token_env: str = Field("GITLAB_TOKEN", description=_Service.model_fields["token_env"].description)

    @property
    def enabled(self) -> bool:
        return bool(self.project)


class JiraTrackerSettings(_Service):
    project: str = Field("", description="Jira project key (e.g. PROJ) whose issues to read; '' = off.")
    url: str = Field("", description="Jira site: https://NAME.atlassian.net (Cloud) or the Server/Data Center root.")
    email: str = Field("", description="Cloud: the account e-mail the API token belongs to. Server/Data Center: '' "
                       "(the token is a personal access token).")
    token_env: str = Field("JIRA_TOKEN", description=_Service.model_fields["token_env"].description)

    @property
    def enabled(self) -> bool:
        return bool(self.project)


class TrackerSettings(Section):
    """Issue trackers read by ``issue_threads`` (each incremental: a second run fetches only what changed)."""

    github: GitHubTrackerSettings = Field(default_factory=GitHubTrackerSettings)
    gitlab: GitLabTrackerSettings = Field(default_factory=GitLabTrackerSettings)
    jira: JiraTrackerSettings = Field(default_factory=JiraTrackerSettings)
    start_date: str = Field("", description="First fetch: read only threads updated on or after this ISO date "
                            "(e.g. 2023-01-01); '' = all of them.")

    _valid_start = field_validator("start_date")(_iso_date)


class GitHubActionsSettings(_Service):
    repo: str = Field("", description="owner/name of the GitHub repository whose failed Actions jobs to read; "
                      "'' = off.")
    url: str = Field("https://api.github.com", description="API root (GitHub Enterprise: https://HOST/api/v3).")
    token_env: str = Field("GITHUB_TOKEN", description=_Service.model_fields["token_env"].description)
    max_runs: int = Field(200, gt=0, description="Newest workflow runs to look at per fetch.")

    @property
    def enabled(self) -> bool:
        return bool(self.repo)


class GitLabCISettings(_Service):
    project: str = Field("", description="group/name (or numeric id) of the GitLab project whose failed CI jobs to "
                         "read; '' = off.")
    url: str = Field("https://gitlab.com", description="GitLab instance (self-hosted: its root URL).")
    token_env: str = Field("GITLAB_TOKEN", description=_Service.model_fields["token_env"].description)
    max_runs: int = Field(200, gt=0, description="Newest pipelines to look at per fetch.")

    @property
    def enabled(self) -> bool:
        return bool(self.project)


class CISettings(Section):
    """CI systems whose failed jobs ``ci_failures`` reads (error excerpt + the commit that fixed it)."""

    github_actions: GitHubActionsSettings = Field(default_factory=GitHubActionsSettings)
    gitlab_ci: GitLabCISettings = Field(default_factory=GitLabCISettings)
    start_date: str = Field("", description="First fetch: read only runs on or after this ISO date; '' = as many "
                            "as max_runs allows.")

    _valid_start = field_validator("start_date")(_iso_date)
