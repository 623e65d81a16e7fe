"""Issues, pull/merge requests and answered discussions of a project's tracker, as ``IssueThread`` records.

One class per service, each a thin layer over that service's own client library — PyGithub, python-gitlab,
jira — which keeps its own pagination, rate-limit waits and retries (``GithubRetry``, ``obey_rate_limit`` /
``retry_transient_errors``, the Jira session's ``max_retries``). What those give up on becomes a
``TrackerError`` worded for the person running mochi, naming the setting to fix; tokens never reach a
message, a log line, a ``repr`` or a record.

Incremental fetches: ``threads(since=cursor(previous, name))`` asks the service only for what changed at or
after the cursor (GitHub ``since``, GitLab ``updated_after``, Jira JQL ``updated >=``); the boundary item
comes again and ``merge_threads`` makes that harmless. Nothing here touches the network before
``threads()`` is iterated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta, tzinfo
from itertools import chain, islice
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import github
import gitlab
import jira
import requests
from github.GithubRetry import GithubRetry

from mochi_pipeline.ingestion.web_api import is_timeout, iso_utc
from mochi_pipeline.records import IssueThread, ThreadComment

GITHUB_API = "https://api.github.com"
# GitHub closes an issue in the same instant it merges the pull request that says "fixes #N".
_CLOSE_BY_MERGE_SLACK = timedelta(minutes=2)
_BOT_NAME = re.compile(r"(\[bot\]|[-_]bot)$|^(project|group)_\d+_bot(_\w+)?$", re.IGNORECASE)
_GITHUB_REPO = re.compile(r"[\w.-]+/[\w.-]+")
_JIRA_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_JIRA_FIELDS = "summary,description,status,labels,created,updated,resolutiondate,reporter,creator,comment"
# GraphQL selections for GitHub discussions; `type: __typename` tells users from bots without another request.
_DISCUSSION_FIELDS = (
    "id number title body createdAt updatedAt author { login type: __typename } "
    "labels(first: 50) { nodes { name } } answer { id }"
)
_DISCUSSION_COMMENT = "id body createdAt author { login type: __typename }"
_DISCUSSION_COMMENT_FIELDS = f"{_DISCUSSION_COMMENT} replies(first: 100) {{ nodes {{ {_DISCUSSION_COMMENT} }} }}"


class TrackerError(RuntimeError):
    """An issue-tracker problem worded for the person running mochi: what failed and which setting to fix.

    ``retryable``: rate limits, server errors and timeouts that outlasted the client's own retries and may
    pass later; other errors (a rejected token, a wrong project) need a fix first.
    """

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class IssueTracker(Protocol):
    name: str

    def threads(self, since: str | None = None, max_items: int | None = None) -> Iterator[IssueThread]: ...

    def latest_update(self) -> str | None: ...


# --- shared helpers --------------------------------------------------------------------------




def _parse_since(since: str | None) -> datetime | None:
    if not since:
        return None
    try:
        return datetime.fromisoformat(iso_utc(since))
    except ValueError:
        raise TrackerError(
            f"Incremental cursor {since!r} is not an ISO-8601 time; drop it to fetch everything."
        ) from None


def _is_bot_name(login: str) -> bool:
    return bool(_BOT_NAME.search(login or ""))




class _Tracker:
    """What the three trackers share: the token kept out of sight, and errors worded alike."""

    name = ""
    label = ""

    def __init__(self, token: str, url: str, timeout_s: float, max_retries: int, page_size: int) -> None:
        if not token:
            raise TrackerError(
                f"No {self.label} token. Set trackers.{self.name}.token_env to the name of an environment "
                "variable that holds one."
            )
        if not 1 <= page_size <= 100:
            raise TrackerError(f"trackers.{self.name}.page_size must be between 1 and 100, got {page_size}.")
        self._token = token
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.page_size = page_size

    def _error(self, message: str, retryable: bool = False) -> TrackerError:
        """A TrackerError whose text has no trace of the token, even if a server echoed it back."""
        return TrackerError(message.replace(self._token, "***"), retryable)

    def _detail(self, text: object) -> str:
        text = " ".join(str(text or "").split())[:300].rstrip(".")
        return f": {text}" if text else ""

    def _auth_error(self, status: int, hint: str = "") -> TrackerError:
        return self._error(
            f"{self.label} at {self.url} rejected the token (HTTP {status}). Set trackers.{self.name}.token_env to "
            f"an environment variable holding a valid token{hint}.",
        )

    def _status_error(self, status: int | None, detail: object, what: str) -> TrackerError:
        if status == 401:
            return self._auth_error(status)
        if status == 429 or (status or 0) >= 500:
            return self._error(
                f"{self.label} at {self.url} answered HTTP {status} while {what}{self._detail(detail)}. That usually "
                f"passes: try again later (trackers.{self.name}.max_retries sets how often mochi retries first).",
                retryable=True,
            )
        if status == 403:
            return self._error(
                f"{self.label} at {self.url} refused access (HTTP 403) while {what}{self._detail(detail)}. Give the "
                f"token of trackers.{self.name}.token_env read access to issues and merge/pull requests.",
            )
        answer = f"answered HTTP {status}" if status else "failed"
        return self._error(f"{self.label} at {self.url} {answer} while {what}{self._detail(detail)}.")

    def _transport_error(self, exc: requests.exceptions.RequestException) -> TrackerError:
        """A timeout, retries used up on rate limits or server errors, or no connection at all."""
        if is_timeout(exc):
            return self._error(
                f"{self.label} at {self.url} did not answer within {self.timeout_s:g} s, also after retries. It may "
                f"be slow or overloaded: try again later, or raise trackers.{self.name}.timeout_s.",
                retryable=True,
            )
        if isinstance(exc, requests.exceptions.RetryError):
            return self._error(
                f"{self.label} at {self.url} kept answering with rate-limit or server errors until the retries ran "
                f"out. Try again later (trackers.{self.name}.max_retries sets how often mochi retries).",
                retryable=True,
            )
        return self._error(
            f"Could not reach {self.label} at {self.url} ({type(exc).__name__}). Check trackers.{self.name}.url "
            "and the network.",
            retryable=True,
        )

    def _since_filter(self, items: Iterable[IssueThread], since: datetime | None) -> Iterator[IssueThread]:
        """Drops what is older than the cursor (a coarse server filter, e.g. Jira's minutes, lets some through)."""
        floor = iso_utc(since) if since else ""
        for thread in items:
            if thread.updated_at >= floor:
                yield thread


# --- GitHub ----------------------------------------------------------------------------------


class GitHubTracker(_Tracker):
    """Issues, pull requests (reviews, review comments, merge commit) and answered discussions of one repository.

    ``base_url`` is ``https://api.github.com`` or GitHub Enterprise's ``https://HOST/api/v3``.
    ``backoff_factor`` scales the retry waits where the server gives no ``Retry-After``; ``min_interval_s``
    spaces requests as GitHub asks of integrations; a primary rate limit waits for its reset at most
    ``max_rate_limit_wait_s``. ``discussions`` also fetches Q&A discussions that have an accepted answer.
    """

    name = "github"
    label = "GitHub"

    def __init__(
        self,
        repo: str,
        token: str,
        base_url: str = GITHUB_API,
        timeout_s: float = 30,
        max_retries: int = 5,
        page_size: int = 100,
        *,
        backoff_factor: float = 1.0,
        min_interval_s: float = 0.25,
        max_rate_limit_wait_s: float = 900,
        discussions: bool = True,
    ) -> None:
        super().__init__(token, base_url, timeout_s, max_retries, page_size)
        if not _GITHUB_REPO.fullmatch(repo):
            raise TrackerError(f"trackers.github.repo must be 'owner/name', got {repo!r}.")
        self.repo = repo
        self.backoff_factor = backoff_factor
        self.min_interval_s = min_interval_s
        self.max_rate_limit_wait_s = max_rate_limit_wait_s
        self.discussions = discussions

    def __repr__(self) -> str:
        return f"GitHubTracker(repo={self.repo!r}, base_url={self.url!r})"

    def threads(self, since: str | None = None, max_items: int | None = None) -> Iterator[IssueThread]:
        since_dt = _parse_since(since)
        with self._errors(), self._client() as gh:
            try:
                repo = gh.get_repo(self.repo)
            except github.UnknownObjectException:
                raise self._error(
                    f"GitHub at {self.url} has no repository {self.repo!r} that this token can see. Check "
                    "trackers.github.repo (owner/name) and trackers.github.url; a token without access to a "
                    "private repository gets the same answer.",
                ) from None
            found = self._issues(repo, since_dt)
            if self.discussions:
                found = chain(found, self._discussions(repo, since_dt))
            yield from islice(self._since_filter(found, since_dt), max_items)

    def latest_update(self) -> str | None:
        """When the most recently updated issue or pull request changed (one request); None when there is none."""
        with self._errors(), self._client(per_page=1) as gh:
            issues = gh.get_repo(self.repo, lazy=True).get_issues(state="all", sort="updated", direction="desc")
            newest = next(iter(issues.get_page(0)), None)
            return iso_utc(newest.updated_at) if newest is not None else None

    def _client(self, per_page: int | None = None) -> github.Github:
        interval = self.min_interval_s or None
        return github.Github(
            base_url=self.url,
            auth=github.Auth.Token(self._token),
            timeout=max(1, math.ceil(self.timeout_s)),  # PyGithub takes whole seconds
            retry=GithubRetry(
                total=self.max_retries,
                backoff_factor=self.backoff_factor,
                max_rate_limit_wait=self.max_rate_limit_wait_s,
            ),
            per_page=per_page or self.page_size,
            seconds_between_requests=interval,
            seconds_between_writes=interval,  # GraphQL reads are POSTs
        )

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except github.BadCredentialsException as exc:
            raise self._auth_error(exc.status) from None
        except github.RateLimitExceededException as exc:
            raise self._error(
                f"GitHub's rate limit for this token is used up and resets later than "
                f"{self.max_rate_limit_wait_s:g} s from now{self._detail(_gh_message(exc))}. Try again after the "
                "reset, or use a token with a higher limit.",
                retryable=True,
            ) from None
        except github.GithubException as exc:
            raise self._status_error(exc.status, _gh_message(exc), f"reading {self.repo}") from None
        except requests.exceptions.RequestException as exc:
            raise self._transport_error(exc) from None

    def _issues(self, repo, since: datetime | None) -> Iterator[IssueThread]:
        query: dict[str, Any] = {"state": "all", "sort": "updated", "direction": "asc"}
        if since:
            query["since"] = since
        for issue in repo.get_issues(**query):
            yield self._issue_thread(repo, issue)

    def _issue_thread(self, repo, issue) -> IssueThread:
        # `issue.pull_request` would cost a request per plain issue (PyGithub completes missing fields).
        is_pull = "/pull/" in (issue.html_url or "")
        author, author_bot = _gh_user(issue.user)
        comments = [_gh_comment(c) for c in issue.get_comments()] if issue.comments else []
        state, closing, closed_by = issue.state, [], []
        if is_pull:
            pull = repo.get_pull(issue.number)
            if pull.merged:
                state = "merged"
                closing = [pull.merge_commit_sha] if pull.merge_commit_sha else []
            comments += [_gh_comment(c, "review_comment", c.path) for c in pull.get_review_comments()]
            comments += [
                _gh_comment(r, "review") for r in pull.get_reviews() if r.body and r.state != "PENDING"
            ]
        elif issue.state == "closed":
            closing, closed_by = self._closers(repo, issue)
        return IssueThread(
            tracker=self.name,
            project=self.repo,
            number=str(issue.number),
            kind="pull_request" if is_pull else "issue",
            title=issue.title or "",
            body=issue.body or "",
            author=author,
            author_is_bot=author_bot,
            state=state,
            labels=[label.name for label in issue.labels],
            created_at=iso_utc(issue.created_at),
            updated_at=iso_utc(issue.updated_at),
            closed_at=iso_utc(issue.closed_at),
            url=issue.html_url or "",
            comments=sorted(comments, key=lambda c: c.created_at),
            closing_commits=closing,
            closed_by=closed_by,
        )

    def _closers(self, repo, issue) -> tuple[list[str], list[str]]:
        """Commits of the issue's "closed" events, and this repository's merged pull requests that closed it.

        A pull request counts when it cross-references the issue and was merged when the issue closed.
        """
        commits: list[str] = []
        closed_times: list[datetime] = []
        merged_refs: list[tuple[str, datetime]] = []
        pull_prefix = f"{repo.html_url}/pull/"
        for event in issue.get_timeline():
            if event.event == "closed":
                closed_times.append(event.created_at)
                if event.commit_id and event.commit_id not in commits:
                    commits.append(event.commit_id)
            elif event.event == "cross-referenced" and event.source and event.source.issue:
                source = event.source.issue
                # Only a pull request's payload has `pull_request`; asking a plain issue for it costs a request.
                if (source.html_url or "").startswith(pull_prefix) and source.pull_request:
                    if source.pull_request.merged_at:
                        merged_refs.append((str(source.number), source.pull_request.merged_at))
        closed_by = [
            number
            for number, merged_at in merged_refs
            if any(abs(merged_at - closed) <= _CLOSE_BY_MERGE_SLACK for closed in closed_times)
        ]
        return commits, list(dict.fromkeys(closed_by))

    def _discussions(self, repo, since: datetime | None) -> Iterator[IssueThread]:
        """Answered discussions, newest change first (GitHub's order), until one is older than ``since``."""
        try:
            for discussion in repo.get_discussions(_DISCUSSION_FIELDS, answered=True):
                if since and discussion.updated_at < since:
                    return
                yield self._discussion_thread(repo, discussion)
        except (github.BadCredentialsException, github.RateLimitExceededException):
            raise
        except github.GithubException as exc:
            if exc.status == 401:
                raise
            raise self._error(
                f"GitHub at {self.url} would not list the discussions of {self.repo} (HTTP {exc.status})"
                f"{self._detail(_gh_message(exc))}. Give the token read access to discussions, or set "
                "trackers.github.discussions to false.",
                retryable=exc.status == 429 or exc.status >= 500,
            ) from None

    def _discussion_thread(self, repo, discussion) -> IssueThread:
        answer_id = discussion.answer.id if discussion.answer else ""
        comments: list[ThreadComment] = []
        for comment in discussion.get_comments(_DISCUSSION_COMMENT_FIELDS):
            for c in (comment, *comment.get_replies()):
                login, bot = _gh_user(c.author)
                comments.append(
                    ThreadComment(
                        author=login,
                        body=c.body or "",
                        created_at=iso_utc(c.created_at),
                        accepted=bool(answer_id) and c.id == answer_id,
                        author_is_bot=bot,
                    )
                )
        author, author_bot = _gh_user(discussion.author)
        return IssueThread(
            tracker=self.name,
            project=self.repo,
            number=str(discussion.number),
            kind="discussion",
            title=discussion.title or "",
            body=discussion.body or "",
            author=author,
            author_is_bot=author_bot,
            state="closed" if answer_id else "open",
            labels=[label.name for label in discussion.get_labels()],
            created_at=iso_utc(discussion.created_at),
            updated_at=iso_utc(discussion.updated_at),
            url=f"{repo.html_url}/discussions/{discussion.number}",
            comments=sorted(comments, key=lambda c: c.created_at),
        )


def _gh_user(user) -> tuple[str, bool]:
    if user is None:
        return "ghost", False  # GitHub's stand-in for deleted accounts
    login = user.login or ""
    return login, user.type == "Bot" or login.endswith("[bot]")


def _gh_comment(item, kind: str = "comment", path: str = "") -> ThreadComment:
    login, bot = _gh_user(item.user)
    created = item.submitted_at if kind == "review" else item.created_at
    return ThreadComment(
        author=login, body=item.body or "", created_at=iso_utc(created), kind=kind, path=path or "",
        author_is_bot=bot,
    )


def _gh_message(exc: github.GithubException) -> str:
    data = exc.data
    if not isinstance(data, dict):
        return str(data or "")
    errors = [e.get("message", "") for e in data.get("errors") or [] if isinstance(e, dict)]  # GraphQL
    return "; ".join([str(data.get("message") or ""), *errors]).strip("; ")


# --- GitLab ----------------------------------------------------------------------------------

_GITLAB_STATE = {"opened": "open", "closed": "closed", "merged": "merged", "locked": "closed"}


class GitLabTracker(_Tracker):
    """Issues (with the merge requests and commits that closed them) and merge requests of one project.

    ``project`` is the path ('group/sub/project') or numeric id; ``url`` the instance (gitlab.com or
    self-hosted). python-gitlab waits out 429s (``Retry-After``) and retries 5xx and timeouts itself.
    """

    name = "gitlab"
    label = "GitLab"

    def __init__(
        self,
        project: str,
        token: str,
        url: str = "https://gitlab.com",
        timeout_s: float = 30,
        max_retries: int = 5,
        page_size: int = 100,
    ) -> None:
        super().__init__(token, url, timeout_s, max_retries, page_size)
        if not project.strip("/"):
            raise TrackerError("trackers.gitlab.project is empty. Set it to the project's path, e.g. group/project.")
        self.project = project.strip("/")
        # Per request: python-gitlab takes these on each call, not on the client.
        self._retry = {"obey_rate_limit": True, "max_retries": max_retries}

    def __repr__(self) -> str:
        return f"GitLabTracker(project={self.project!r}, url={self.url!r})"

    def threads(self, since: str | None = None, max_items: int | None = None) -> Iterator[IssueThread]:
        since_dt = _parse_since(since)
        with self._errors(), self._client() as gl:
            try:
                project = gl.projects.get(self.project, **self._retry)
            except gitlab.GitlabGetError as exc:
                if exc.response_code != 404:
                    raise
                raise self._error(
                    f"GitLab at {self.url} has no project {self.project!r} that this token can see. Check "
                    "trackers.gitlab.project (group/project path) and trackers.gitlab.url.",
                ) from None
            found = chain(self._issues(project, since_dt), self._merge_requests(project, since_dt))
            yield from islice(self._since_filter(found, since_dt), max_items)

    def latest_update(self) -> str | None:
        """When the most recently updated issue or merge request changed (two requests); None when there is none."""
        newest = {"order_by": "updated_at", "sort": "desc", "per_page": 1, "get_all": False, **self._retry}
        with self._errors(), self._client() as gl:
            project = gl.projects.get(self.project, lazy=True)
            times = [item.attributes.get("updated_at") for manager in (project.issues, project.mergerequests)
                     for item in manager.list(**newest)]
        return max((iso_utc(t) for t in times if t), default=None)

    def _client(self) -> gitlab.Gitlab:
        return gitlab.Gitlab(
            self.url,
            private_token=self._token,
            timeout=self.timeout_s,
            retry_transient_errors=True,
            per_page=self.page_size,
        )

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except gitlab.GitlabAuthenticationError as exc:
            raise self._auth_error(exc.response_code or 401, " (scope read_api)") from None
        except gitlab.GitlabError as exc:
            raise self._status_error(exc.response_code, exc.error_message, f"reading {self.project}") from None
        except requests.exceptions.RequestException as exc:
            raise self._transport_error(exc) from None

    def _listing(self, since: datetime | None) -> dict[str, Any]:
        query: dict[str, Any] = {"iterator": True, "order_by": "updated_at", "sort": "asc", **self._retry}
        if since:
            query["updated_after"] = iso_utc(since)
        return query

    def _issues(self, project, since: datetime | None) -> Iterator[IssueThread]:
        for issue in project.issues.list(**self._listing(since)):
            a = issue.attributes
            closing: list[str] = []
            closed_by: list[str] = []
            if a.get("state") == "closed":
                closing, closed_by = self._closers(issue)
            yield self._thread(a, "issue", self._notes(issue), closing, closed_by)

    def _merge_requests(self, project, since: datetime | None) -> Iterator[IssueThread]:
        for mr in project.mergerequests.list(**self._listing(since)):
            a = mr.attributes
            closing = _mr_commits(a) if a.get("state") == "merged" else []
            yield self._thread(a, "merge_request", self._notes(mr), closing, [])

    def _notes(self, noteable) -> list[ThreadComment]:
        if not noteable.attributes.get("user_notes_count", 1):
            return []
        comments = []
        for note in noteable.notes.list(iterator=True, sort="asc", order_by="created_at", **self._retry):
            n = note.attributes
            if n.get("system"):
                continue
            position = n.get("position") or {}
            login, bot = _gl_user(n.get("author"))
            comments.append(
                ThreadComment(
                    author=login,
                    body=n.get("body") or "",
                    created_at=iso_utc(n.get("created_at")),
                    kind="review_comment" if n.get("type") == "DiffNote" else "comment",
                    path=position.get("new_path") or position.get("old_path") or "",
                    author_is_bot=bot,
                )
            )
        return sorted(comments, key=lambda c: c.created_at)

    def _closers(self, issue) -> tuple[list[str], list[str]]:
        """Merged merge requests that close the issue, their commits, and commits whose push closed it."""
        commits: list[str] = []
        closed_by: list[str] = []
        for mr in issue.closed_by(get_all=True, **self._retry):
            if mr.get("state") == "merged":
                closed_by.append(str(mr["iid"]))
                commits += _mr_commits(mr)
        try:
            events = list(issue.resourcestateevents.list(iterator=True, **self._retry))
        except gitlab.GitlabListError as exc:
            if exc.response_code != 404:  # instances before GitLab 13.2 have no state events
                raise
            events = []
        for event in events:
            e = event.attributes
            if e.get("state") != "closed":
                continue
            if e.get("source_commit"):
                commits.append(e["source_commit"])
            source_mr = e.get("source_merge_request") or {}
            if source_mr.get("iid"):
                closed_by.append(str(source_mr["iid"]))
                commits += _mr_commits(source_mr)
        return list(dict.fromkeys(commits)), list(dict.fromkeys(closed_by))

    def _thread(
        self, a: dict, kind: str, comments: list[ThreadComment], closing: list[str], closed_by: list[str]
    ) -> IssueThread:
        author, bot = _gl_user(a.get("author"))
        state = _GITLAB_STATE.get(a.get("state", ""), a.get("state", ""))
        return IssueThread(
            tracker=self.name,
            project=self.project,
            number=str(a["iid"]),
            kind=kind,
            title=a.get("title") or "",
            body=a.get("description") or "",
            author=author,
            author_is_bot=bot,
            state=state,
            labels=[label if isinstance(label, str) else label.get("name", "") for label in a.get("labels") or []],
            created_at=iso_utc(a.get("created_at")),
            updated_at=iso_utc(a.get("updated_at")),
            closed_at=iso_utc(a.get("merged_at") if state == "merged" else a.get("closed_at")),
            url=a.get("web_url") or "",
            comments=comments,
            closing_commits=closing,
            closed_by=closed_by,
        )


def _gl_user(user: dict | None) -> tuple[str, bool]:
    if not user:
        return "ghost", False
    login = user.get("username") or ""
    return login, bool(user.get("bot")) or _is_bot_name(login)


def _mr_commits(mr: dict) -> list[str]:
    """Commits a merged merge request put on its target: merge and squash commits, else (fast-forward) its head."""
    found = [sha for sha in (mr.get("merge_commit_sha"), mr.get("squash_commit_sha")) if sha]
    if not found and mr.get("state") == "merged" and mr.get("sha"):
        found = [mr["sha"]]
    return found


# --- Jira ------------------------------------------------------------------------------------


class JiraTracker(_Tracker):
    """Issues of one Jira project with their comments; the issue key ('PROJ-123') is the number.

    Jira Server / Data Center authenticates with a personal access token (``token``); Jira Cloud with
    ``email`` plus an API token. Jira has no notion of closing commits, so those stay empty.
    """

    name = "jira"
    label = "Jira"

    def __init__(
        self,
        project: str,
        url: str,
        token: str,
        email: str = "",
        timeout_s: float = 30,
        max_retries: int = 3,
        page_size: int = 100,
    ) -> None:
        super().__init__(token, url, timeout_s, max_retries, page_size)
        if not url:
            raise TrackerError("trackers.jira.url is empty. Set it to the Jira site, e.g. https://jira.example.com.")
        if not _JIRA_KEY.fullmatch(project):
            raise TrackerError(f"trackers.jira.project must be a project key such as PROJ, got {project!r}.")
        self.project = project
        self.email = email

    def __repr__(self) -> str:
        return f"JiraTracker(project={self.project!r}, url={self.url!r}, email={self.email!r})"

    def threads(self, since: str | None = None, max_items: int | None = None) -> Iterator[IssueThread]:
        since_dt = _parse_since(since)
        with self._errors(), closing(self._client()) as client:
            jql = self.jql(since_dt, _user_zone(client) if since_dt else UTC)
            found = (self._thread(client, issue) for issue in self._search(client, jql))
            yield from islice(self._since_filter(found, since_dt), max_items)

    def latest_update(self) -> str | None:
        """When the most recently updated issue changed (one search for one issue); None when there is none."""
        jql = f'project = "{self.project}" ORDER BY updated DESC'
        with self._errors(), closing(self._client()) as client:
            if client.deploymentType == "Cloud":
                issues = client.enhanced_search_issues(jql, maxResults=1, fields="updated", json_result=True)
            else:
                issues = client.search_issues(jql, maxResults=1, fields="updated", json_result=True)
        newest = (issues.get("issues") or [None])[0]
        return iso_utc(newest["fields"]["updated"]) if newest else None

    def jql(self, since: datetime | None, zone: tzinfo = UTC) -> str:
        """The search; JQL reads times in the searching user's time zone, to the minute."""
        where = f'project = "{self.project}"'
        if since:
            where += f' AND updated >= "{since.astimezone(zone):%Y/%m/%d %H:%M}"'
        return f"{where} ORDER BY updated ASC"

    def _client(self) -> jira.JIRA:
        auth: dict[str, Any] = {"basic_auth": (self.email, self._token)} if self.email else {"token_auth": self._token}
        return jira.JIRA(server=self.url, timeout=self.timeout_s, max_retries=self.max_retries, **auth)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except jira.JIRAError as exc:  # never str(exc): it prints the request headers, token included
            status = exc.status_code
            if status == 401:
                raise self._auth_error(401, " (and trackers.jira.email for Jira Cloud)") from None
            if status == 400:
                raise self._error(
                    f"Jira at {self.url} rejected the search for project {self.project!r}{self._detail(exc.text)}. "
                    "Check trackers.jira.project (the project key, e.g. PROJ).",
                ) from None
            if status == 404:
                raise self._error(
                    f"Jira at {self.url} has no REST API there (HTTP 404). Check trackers.jira.url (the site's "
                    "base URL, without /rest/...).",
                ) from None
            raise self._status_error(status, exc.text, f"searching {self.project}") from None
        except requests.exceptions.RequestException as exc:
            raise self._transport_error(exc) from None

    def _search(self, client: jira.JIRA, jql: str) -> Iterator[dict]:
        """Raw issues page by page: Cloud's token-paged search/jql, else the offset-paged search."""
        if client.deploymentType == "Cloud":
            token = None
            while True:
                page = client.enhanced_search_issues(
                    jql, nextPageToken=token, maxResults=self.page_size, fields=_JIRA_FIELDS, json_result=True
                )
                yield from page.get("issues") or []
                token = page.get("nextPageToken")
                if page.get("isLast", True) or not token:
                    return
        start = 0
        while True:
            page = client.search_issues(
                jql, startAt=start, maxResults=self.page_size, fields=_JIRA_FIELDS, json_result=True
            )
            issues = page.get("issues") or []
            yield from issues
            start += len(issues)
            if not issues or start >= page.get("total", 0):
                return

    def _thread(self, client: jira.JIRA, issue: dict) -> IssueThread:
        key = issue["key"]
        f = issue.get("fields") or {}
        listed = f.get("comment") or {}
        raw_comments = list(listed.get("comments") or [])
        while len(raw_comments) < (listed.get("total") or 0):  # the search returns only the first comments
            more = client.comments(key, start_at=len(raw_comments), max_results=self.page_size)
            if not more:
                break
            raw_comments += [c.raw for c in more]
        comments = []
        for c in raw_comments:
            login, bot = _jira_user(c.get("author"))
            comments.append(
                ThreadComment(
                    author=login, body=jira_text(c.get("body")), created_at=iso_utc(c.get("created")),
                    author_is_bot=bot,
                )
            )
        author, author_bot = _jira_user(f.get("reporter") or f.get("creator"))
        category = ((f.get("status") or {}).get("statusCategory") or {}).get("key")
        return IssueThread(
            tracker=self.name,
            project=self.project,
            number=key,
            kind="issue",
            title=f.get("summary") or "",
            body=jira_text(f.get("description")),
            author=author,
            author_is_bot=author_bot,
            state="closed" if category == "done" else "open",
            labels=list(f.get("labels") or []),
            created_at=iso_utc(f.get("created")),
            updated_at=iso_utc(f.get("updated")),
            closed_at=iso_utc(f.get("resolutiondate")),
            url=f"{self.url}/browse/{key}",
            comments=sorted(comments, key=lambda c: c.created_at),
        )


def _user_zone(client: jira.JIRA) -> tzinfo:
    try:
        return ZoneInfo(client.myself().get("timeZone") or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _jira_user(user: dict | None) -> tuple[str, bool]:
    if not user:
        return "anonymous", False
    login = user.get("name") or user.get("accountId") or user.get("displayName") or ""
    return login, user.get("accountType") == "app"


def jira_text(value: object) -> str:
    """A Jira description or comment as text: REST v2's wiki markup string, or Cloud v3's ADF document."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if not isinstance(value, dict):
        return str(value)
    return re.sub(r"\n{3,}", "\n\n", _adf(value)).strip()


def _adf(node: dict) -> str:
    kind = node.get("type")
    attrs = node.get("attrs") or {}
    if kind == "text":
        return node.get("text", "")
    if kind == "hardBreak":
        return "\n"
    if kind in ("mention", "emoji"):
        return attrs.get("text") or attrs.get("shortName") or ""
    if kind in ("inlineCard", "blockCard"):
        return attrs.get("url", "")
    inner = "".join(_adf(child) for child in node.get("content") or [] if isinstance(child, dict))
    if kind == "codeBlock":
        return f"```{attrs.get('language', '')}\n{inner}\n```\n\n"
    if kind == "listItem":
        return f"- {inner.strip()}\n"
    if kind == "heading":
        return f"{'#' * int(attrs.get('level', 1))} {inner}\n\n"
    if kind in ("paragraph", "blockquote", "panel", "rule"):
        return f"{inner}\n\n"
    if kind in ("bulletList", "orderedList"):
        return f"{inner}\n"
    return inner


# --- combining runs --------------------------------------------------------------------------


def thread_key(thread: IssueThread) -> tuple[str, str, str, str]:
    """Identity of a thread. The kind is part of it: a GitLab issue and merge request can share a number."""
    return thread.tracker, thread.project, thread.kind, thread.number


def _order(thread: IssueThread) -> tuple:
    digits = re.search(r"(\d+)$", thread.number)
    number = (thread.number[: digits.start()], int(digits.group(1))) if digits else (thread.number, -1)
    return thread.updated_at, thread.tracker, thread.project, thread.kind, number


def merge_threads(earlier: list[IssueThread], fresh: list[IssueThread]) -> list[IssueThread]:
    """``earlier`` updated with ``fresh`` (fresh wins per thread), ordered by update time then identity."""
    merged = {thread_key(t): t for t in earlier}
    merged.update((thread_key(t), t) for t in fresh)
    return sorted(merged.values(), key=_order)


def cursor(threads: Iterable[IssueThread], tracker: str, project: str | None = None) -> str | None:
    """The newest ``updated_at`` of ``tracker``'s threads (of ``project`` if given): the next fetch's ``since``."""
    times = [
        t.updated_at for t in threads
        if t.tracker == tracker and t.updated_at and (project is None or t.project == project)
    ]
    return max(times, default=None)
