"""Failed CI jobs (GitHub Actions, GitLab CI) reduced to their error excerpt and linked to the fix.

Each client lists the newest finished runs (workflow runs / pipelines) since a time, the jobs of the
failed ones, and each failed job's log, then yields a ``CIFailure`` whose ``fixed_by`` is the commit of
the next later run on the same lineage (GitHub: workflow + head repository + branch; GitLab: ref) in
which a job of the same name succeeded. Linking only looks at the run list already fetched: jobs of a
run are listed at most once per fetch, lazily, and only for failed runs and the runs a link needs.

Incremental fetches: a failure seen before the job that fixes it ran has ``fixed_by == ""``; the
cursor (``cursor``) then stays at the oldest such failure, so the next fetch lists its run again and
re-yields it linked; ``merge_failures`` lets the fresh record win.

``error_excerpt`` is the pure part: ANSI codes, timestamps, group/section markers, ``\\r`` progress
redraws and download noise removed, then the tail of the log plus windows around error-looking lines.

Tokens never reach a message, a repr or a record: errors are worded from status codes and the
server's short message, scrubbed of the token, and name the mochi.yaml setting that fixes them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any
from urllib.parse import urljoin

import github
import gitlab
import requests
from github.GithubRetry import GithubRetry
from urllib3.util import Retry

from mochi_pipeline.ingestion.web_api import is_timeout, iso_utc
from mochi_pipeline.records import CIFailure

MAX_LOG_BYTES = 32 << 20  # a longer log keeps its first quarter and its end
_TRANSIENT = (429, 500, 502, 503, 504)


class CIError(RuntimeError):
    """A CI service problem worded for the person running mochi: what failed and which setting fixes it.

    ``retryable``: rate limits, server errors and timeouts that may pass later; a bad token, a missing
    permission or a wrong project name need a fix first.
    """

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


# --- error excerpt (pure) -----------------------------------------------------------------------

# A runner's per-line timestamp: GitHub `2024-05-01T12:00:00.1234567Z `, GitLab (timestamps on)
# `2024-05-01T12:00:00.123456Z 00O ` where a trailing `+` (`00O+`) continues the previous line.
_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z(?: [0-9a-f]{2}[OE](\+?))?(?: |$)")
_SECTION = re.compile(r"section_(?:start|end):\d+:[A-Za-z0-9_.-]+(?:\[[^\]\r\n]*\])?\r?")
_TO_COLUMN_1 = re.compile(r"\x1b\[[01]?G")  # "cursor to column 1": a redraw, like \r
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[()][A-Za-z0-9]|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_GITHUB_MARK = re.compile(r"^##\[(group|endgroup|error|warning|notice|debug|command|section)\]")
_MARK_PREFIX = {"error": "Error: ", "warning": "Warning: ", "notice": "Notice: "}
_NOISE = re.compile("|".join((
    # pip
    r"^\s*(?:Downloading|Collecting|Using cached|Requirement already satisfied|Obtaining|Looking in indexes"
    r"|Preparing metadata|Installing build dependencies|Getting requirements to build|Building wheels? for"
    r"|Created wheel for|Stored in directory|Attempting uninstall|Found existing installation"
    r"|Uninstalling|Successfully uninstalled|Installing collected packages|Successfully installed)\b",
    # progress bars and spinners (pip, npm, tqdm, docker)
    r"[━█░▒▓▏▎▍▌▋▊▉■⣿]{3,}", r"\beta \d+:\d\d:\d\d\b", r"^\s*\d{1,3}%\s*\|", r"^\s*[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏⸨]",
    # npm / yarn
    r"^npm (?:http|timing|sill|verb)\b", r"^npm WARN deprecated\b",
    r"^\[\d+/\d+\] (?:Resolving|Fetching|Linking|Building)",
    # cargo, go
    r"^\s+(?:Downloaded|Downloading crates|Compiling|Updating crates\.io index|Locking|Adding|Fresh)\b",
    r"^go: (?:downloading|finding|extracting) ",
    # git, apt, docker pull
    r"^\s*(?:remote: )?(?:Receiving|Resolving|Counting|Compressing|Enumerating) (?:objects|deltas)",
    r"^(?:Get|Hit|Ign):\d+ https?://", r"^(?:Reading package lists|Building dependency tree|Reading state information)",
    r"^[0-9a-f]{12}: (?:Pulling fs layer|Waiting|Downloading|Verifying Checksum|Download complete|Extracting"
    r"|Pull complete|Already exists)",
)))
_ERROR = re.compile(
    r"Traceback \(most recent call last\)|\b\w*Error\b|\bERROR\b|\bERR!|\bFAILED\b|\bFAIL\b|\b\d+ failed\b"
    r"|\berror(?:\[\w+\])?:|\bpanic:|\bfatal:|\bassert|exit code|\w*Exception\b"
)
# The runner's own last word on a failed job (GitHub's ##[error] line, GitLab's ERROR: Job failed).
_JOB_END = re.compile(r"^Error: Process completed with exit code \d+|^ERROR: Job failed\b")
_WINDOWS = ((3, 6), (4, 20))  # context lines (before, after) around an error line: first pass, second pass


def _clean_line(raw: str) -> str | None:
    """The visible text of one raw line; None for a line that only held markers or redraws."""
    if not raw.strip():
        return ""
    line = _SECTION.sub("", raw)
    line = _TO_COLUMN_1.sub("\r", line)
    if "\r" in line:  # a redrawn line (progress): keep its last visible state
        states = [s for s in line.split("\r") if _ANSI.sub("", s).strip()]
        line = states[-1] if states else ""
    line = _CONTROL.sub("", _ANSI.sub("", line)).rstrip()
    mark = _GITHUB_MARK.match(line)
    if mark:
        kind = mark.group(1)
        if kind in ("endgroup", "debug"):
            return None
        line = _MARK_PREFIX.get(kind, "") + line[mark.end():]
    return line or None


def clean_log(log: str) -> list[str]:
    """The log's lines without ANSI codes, timestamps, markers, progress redraws, download noise and
    repeated lines (a run of identical or blank lines becomes one)."""
    raw: list[str] = []
    for line in log.lstrip("\ufeff").replace("\r\n", "\n").split("\n"):
        stamp = _STAMP.match(line)
        if stamp:
            line = line[stamp.end():]
            if stamp.group(1) and raw:  # GitLab: the rest of the previous line
                raw[-1] += line
                continue
        raw.append(line)
    lines: list[str] = []
    for line in map(_clean_line, raw):
        if line is None or _NOISE.search(line):
            continue
        if lines and line == lines[-1] or not line and not lines:
            continue
        lines.append(line)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _cost(selected: set[int], n: int) -> int:
    """Lines the excerpt prints for ``selected``: the lines plus one marker per skipped span."""
    if not selected:
        return 1 if n else 0
    order = sorted(selected)
    gaps = (order[0] > 0) + (order[-1] < n - 1) + sum(b - a > 1 for a, b in zip(order, order[1:], strict=False))
    return len(order) + gaps


def error_excerpt(log: str, max_lines: int = 60) -> str:
    """The lines of ``log`` that tell why the job failed, at most ``max_lines`` of them (markers included).

    Kept: the tail up to the runner's line that ended the job (the clean-up steps after it are no
    context), then windows around error-looking lines (tracebacks, ``Error``, ``FAILED``, ``error:``,
    ``panic:``, ``assert``, ``exit code``) in log order, each distinct error line once. Skipped spans
    become ``[... N lines skipped ...]``.
    """
    if max_lines < 1:
        raise ValueError(f"max_lines must be at least 1, got {max_lines}")
    lines = clean_log(log)
    n = len(lines)
    if n <= max_lines:
        return "\n".join(lines)
    ends = [i for i, line in enumerate(lines) if _JOB_END.search(line)]
    end = ends[-1] if ends else n - 1
    tail = max(1, max_lines // 3)
    selected = set(range(max(0, end - tail + 1), end + 1))
    while selected and _cost(selected, n) > max_lines:  # a tiny max_lines: the tail overflows with its markers
        selected.discard(min(selected))
    # Lines after the one that ended the job are the runner's clean-up: never context.
    hits, seen = [], set()
    for i, line in enumerate(lines[: end + 1]):
        if _ERROR.search(line) and line.strip() not in seen:
            seen.add(line.strip())
            hits.append(i)
    del hits[max_lines:]  # later ones could not get a line of the budget anyway
    for before, after in _WINDOWS:  # narrow windows around every error first, then wider ones
        for hit in hits:
            if _cost(selected, n) >= max_lines:
                break
            for i in [hit, *range(hit - 1, hit - before - 1, -1), *range(hit + 1, hit + after + 1)]:
                if 0 <= i <= end and i not in selected:
                    if _cost(selected | {i}, n) > max_lines:
                        break
                    selected.add(i)
    out: list[str] = []
    last = -1
    for i in sorted(selected):
        if i - last > 1:
            out.append(f"[... {i - last - 1} lines skipped ...]")
        out.append(lines[i])
        last = i
    if last < n - 1 and len(out) < max_lines:
        out.append(f"[... {n - 1 - last} lines skipped ...]")
    return "\n".join(out)


# --- records, merge and cursor (pure) -----------------------------------------------------------




def merge_failures(earlier: Iterable[CIFailure], fresh: Iterable[CIFailure]) -> list[CIFailure]:
    """One record per (system, project, job_id), the fresh one winning (it may carry a new ``fixed_by``)
    but never dropping a ``fixed_by`` already known; ordered by failure time, then key."""
    merged = {(f.system, f.project, f.job_id): f for f in earlier}
    for f in fresh:
        key = (f.system, f.project, f.job_id)
        old = merged.get(key)
        if old is not None and old.fixed_by and not f.fixed_by:
            f = f.model_copy(update={"fixed_by": old.fixed_by})
        merged[key] = f
    return sorted(merged.values(), key=lambda f: (f.failed_at, f.system, f.project, f.job_id))


def cursor(failures: Iterable[CIFailure], system: str, relink_days: float = 14.0) -> str | None:
    """Where the next fetch of ``system`` starts: the oldest still unfixed failure within ``relink_days``
    of the newest failure, else the newest failure; None before the first fetch.

    A failure that was unfixed when fetched is so fetched again (with its run) until a later run fixes
    it or it falls ``relink_days`` behind, so a branch that never goes green cannot pin the cursor.
    """
    times = [(f.failed_at, bool(f.fixed_by)) for f in failures if f.system == system and f.failed_at]
    if not times:
        return None
    newest = max(t for t, _ in times)
    horizon = iso_utc(datetime.fromisoformat(newest.replace("Z", "+00:00")) - timedelta(days=relink_days))
    unfixed = [t for t, fixed in times if not fixed and t >= horizon]
    return min(unfixed) if unfixed else newest


# --- shared fetch logic -------------------------------------------------------------------------


@dataclass
class _Run:
    id: int
    lineage: tuple  # runs with equal lineage are compared to find a fix
    sha: str
    branch: str
    pipeline: str
    created: str
    updated: str
    has_failures: bool
    can_pass: bool
    handle: Any = field(repr=False)


@dataclass
class _Job:
    id: int
    name: str
    passed: bool
    failed: bool
    url: str
    finished: str
    handle: Any = field(repr=False)


def _parse_since(since: str | None, setting: str) -> datetime | None:
    if not since:
        return None
    try:
        value = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        raise CIError(f"{since!r} is not an ISO-8601 date or time: set ci.start_date like 2024-01-31 "
                      f"(read by {setting}).") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _read_bounded(chunks: Iterable[bytes], limit: int) -> str:
    """The text of a streamed log; past ``limit`` bytes, its first quarter and its end."""
    head_limit = limit // 4
    head, tail = bytearray(), bytearray()
    cut = False
    for chunk in chunks:
        if not chunk:
            continue
        if len(head) < head_limit:
            take = head_limit - len(head)
            head += chunk[:take]
            chunk = chunk[take:]
        tail += chunk
        if len(tail) > limit - head_limit:
            del tail[: len(tail) - (limit - head_limit)]
            cut = True
    text = (head + tail).decode("utf-8", "replace") if not cut else (
        head.decode("utf-8", "replace") + "\n[... log truncated ...]\n" + tail.decode("utf-8", "replace"))
    return text


class _CILogs:
    """The fetch shared by both systems; subclasses list runs, jobs and logs through their client."""

    name = ""
    setting = ""

    def __init__(self, project: str, token: str, *, timeout_s: float, max_retries: int, max_runs: int,
                 per_page: int, overlap_s: float, max_excerpt_lines: int, max_log_bytes: int) -> None:
        self.project = project
        self._token = token
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_runs = max_runs
        self.per_page = per_page
        self.overlap_s = overlap_s
        self.max_excerpt_lines = max_excerpt_lines
        self.max_log_bytes = max_log_bytes

    def __repr__(self) -> str:  # no token
        return f"{type(self).__name__}(project={self.project!r}, url={self._url!r})"

    # subclass hooks
    _url = ""

    def _open(self, stack: ExitStack, per_page: int) -> None:
        raise NotImplementedError

    def _runs(self, since: datetime | None) -> Iterator[_Run]:
        raise NotImplementedError

    def _jobs(self, run: _Run) -> Iterator[_Job]:
        raise NotImplementedError

    def _log(self, job: _Job) -> str:
        raise NotImplementedError

    def _newest(self) -> str | None:
        raise NotImplementedError

    def _translate(self, err: Exception) -> CIError | None:
        raise NotImplementedError

    @contextmanager
    def _session(self, per_page: int | None = None) -> Iterator[None]:
        """The clients open, and their errors turned into ``CIError``."""
        with ExitStack() as stack:
            try:
                self._open(stack, per_page or self.per_page)
                yield
            except CIError:
                raise
            except Exception as err:
                translated = self._translate(err)
                if translated is None:
                    raise
                message = str(translated).replace(self._token, "***") if self._token else str(translated)
                raise CIError(message, translated.retryable) from None

    def latest_update(self) -> str | None:
        """When the newest finished run was last updated (one request); None when there is none."""
        with self._session(per_page=1):
            return self._newest()

    def failures(self, since: str | None = None) -> Iterator[CIFailure]:
        """Failed jobs of the newest ``max_runs`` runs updated (GitLab) or created (GitHub) since ``since``
        (minus ``overlap_s``), oldest first, each linked to the commit that fixed it when the list shows one."""
        start = _parse_since(since, self.setting)
        if start is not None:
            start -= timedelta(seconds=self.overlap_s)
        with self._session():
            runs = sorted(islice(self._runs(start), self.max_runs), key=lambda r: (r.created, r.id))
            jobs: dict[int, list[_Job]] = {}

            def jobs_of(run: _Run) -> list[_Job]:
                if run.id not in jobs:
                    jobs[run.id] = list(self._jobs(run))
                return jobs[run.id]

            for index, run in enumerate(runs):
                if not run.has_failures:
                    continue
                for job in jobs_of(run):
                    if not job.failed:
                        continue
                    yield CIFailure(
                        system=self.name, project=self.project, pipeline=run.pipeline, job=job.name,
                        job_id=str(job.id), url=job.url, commit=run.sha, branch=run.branch,
                        failed_at=job.finished or run.updated,
                        excerpt=error_excerpt(self._log(job), self.max_excerpt_lines),
                        fixed_by=_fixed_by(runs, index, job.name, jobs_of),
                    )


def _fixed_by(runs: list[_Run], index: int, job_name: str, jobs_of: Callable[[_Run], list[_Job]]) -> str:
    """The commit of the first later run of the same lineage in which a job named ``job_name`` passed."""
    lineage = runs[index].lineage
    for later in runs[index + 1:]:
        if later.lineage == lineage and later.can_pass:
            if any(job.name == job_name and job.passed for job in jobs_of(later)):
                return later.sha
    return ""




def _short(text: Any) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= 200 else text[:199] + "…"


# --- GitHub Actions -----------------------------------------------------------------------------


class GitHubActionsLogs(_CILogs):
    """Failed jobs of a GitHub repository's Actions runs, through PyGithub (GitHub.com or Enterprise Server).

    Retries (rate limits, 5xx, timeouts) are PyGithub's ``GithubRetry``; ``backoff_factor`` and
    ``seconds_between_requests`` only exist so tests need not wait.
    """

    name = "github_actions"
    setting = "ci.github_actions"

    def __init__(self, repo: str, token: str, base_url: str = "https://api.github.com", *, timeout_s: float = 30,
                 max_retries: int = 5, max_runs: int = 200, per_page: int = 100, backoff_factor: float = 1.0,
                 max_rate_limit_wait_s: float = 600, seconds_between_requests: float = 0.25,
                 overlap_s: float = 6 * 3600, max_excerpt_lines: int = 60,
                 max_log_bytes: int = MAX_LOG_BYTES) -> None:
        # overlap_s: runs are filtered by creation time, and a run created before the cursor can finish
        # (and fail) after it; GitHub-hosted jobs run for at most 6 hours.
        super().__init__(repo, token, timeout_s=timeout_s, max_retries=max_retries, max_runs=max_runs,
                         per_page=per_page, overlap_s=overlap_s, max_excerpt_lines=max_excerpt_lines,
                         max_log_bytes=max_log_bytes)
        self._url = base_url.rstrip("/")
        self.backoff_factor = backoff_factor
        self.max_rate_limit_wait_s = max_rate_limit_wait_s
        self.seconds_between_requests = seconds_between_requests

    def _retry(self) -> GithubRetry:
        return GithubRetry(total=self.max_retries, backoff_factor=self.backoff_factor,
                           status_forcelist=[429, *range(500, 600)], max_rate_limit_wait=self.max_rate_limit_wait_s,
                           secondary_rate_wait=min(60, self.max_rate_limit_wait_s))

    def _open(self, stack: ExitStack, per_page: int) -> None:
        self._gh = stack.enter_context(github.Github(
            base_url=self._url, auth=github.Auth.Token(self._token), timeout=max(1, math.ceil(self.timeout_s)),
            retry=self._retry(), per_page=per_page, lazy=True,
            seconds_between_requests=self.seconds_between_requests or None,
        ))
        self._repo = self._gh.get_repo(self.project)
        # The log itself lies behind a pre-signed URL on another host: fetched without the token.
        self._download = stack.enter_context(requests.Session())
        adapter = requests.adapters.HTTPAdapter(max_retries=Retry(
            total=self.max_retries, backoff_factor=self.backoff_factor, status_forcelist=_TRANSIENT,
            allowed_methods={"GET"}))
        self._download.mount("https://", adapter)
        self._download.mount("http://", adapter)

    def _runs(self, since: datetime | None) -> Iterator[_Run]:
        kwargs = {"created": f">={iso_utc(since)}"} if since else {}
        for run in self._repo.get_workflow_runs(status="completed", exclude_pull_requests=True, **kwargs):
            head = run.head_repository.full_name if run.head_repository is not None else self.project
            yield _Run(id=run.id, lineage=(run.workflow_id, head, run.head_branch), sha=run.head_sha,
                       branch=run.head_branch or "", pipeline=run.name or "", created=iso_utc(run.created_at),
                       updated=iso_utc(run.updated_at), has_failures=run.conclusion in ("failure", "timed_out"),
                       can_pass=run.conclusion not in ("startup_failure", "skipped", "action_required"), handle=run)

    def _jobs(self, run: _Run) -> Iterator[_Job]:
        for job in run.handle.jobs():
            yield _Job(id=job.id, name=job.name, passed=job.conclusion == "success",
                       failed=job.conclusion in ("failure", "timed_out"), url=job.html_url or "",
                       finished=iso_utc(job.completed_at), handle=job)

    def _log(self, job: _Job) -> str:
        try:
            location = job.handle.logs_url()  # GET .../actions/jobs/{id}/logs answers 302 to the text
        except github.GithubException as err:
            if err.status in (404, 410):
                return ""  # the log expired (retention) or was deleted
            raise
        with self._download.get(urljoin(self._url + "/", location), timeout=self.timeout_s, stream=True) as reply:
            if reply.status_code in (404, 410):
                return ""
            reply.raise_for_status()
            return _read_bounded(reply.iter_content(1 << 16), self.max_log_bytes)

    def _newest(self) -> str | None:
        newest = next(iter(self._repo.get_workflow_runs(status="completed", exclude_pull_requests=True)), None)
        return iso_utc(newest.updated_at) if newest is not None else None

    def _translate(self, err: Exception) -> CIError | None:
        where = f"{self.project} at {self._url}"
        retries = f"{self.max_retries} retries (ci.github_actions.max_retries)"
        if isinstance(err, github.GithubException):
            status, said = err.status, _short(err.data.get("message") if isinstance(err.data, dict) else err.data)
            if isinstance(err, github.RateLimitExceededException) or status == 429:
                return CIError(f"GitHub's rate limit for {where} was still exceeded after {retries} and waits of up "
                               f"to {self.max_rate_limit_wait_s:g}s; try again later.", retryable=True)
            if status == 401:
                return CIError(f"GitHub rejected the token for {where} (401 {said}): put a valid token in the "
                               f"environment variable that ci.github_actions.token_env names.")
            if status == 403:
                return CIError(f"GitHub refused access to the Actions runs of {where} (403 {said}): the token in the "
                               f"variable that ci.github_actions.token_env names needs read access to Actions "
                               f"(fine-grained: 'Actions: read'; classic: 'repo' for a private repository).")
            if status == 404:
                return CIError(f"GitHub has no repository {self.project!r} at {self._url} that this token can see "
                               f"(404): check ci.github_actions.repo (owner/name) and ci.github_actions.url.")
            return CIError(f"GitHub answered {status} {said} for {where}" + (f" after {retries}." if status >= 500
                                                                              else "."), retryable=status >= 500)
        if is_timeout(err):
            return CIError(f"GitHub ({self._url}) did not answer within {self.timeout_s:g}s, {retries} included: "
                           f"raise ci.github_actions.timeout_s or try again later.", retryable=True)
        if isinstance(err, requests.exceptions.RetryError):  # urllib3 gave up on a retried status
            if "429" in str(err):
                return CIError(f"GitHub's rate limit for {where} was still exceeded after {retries}; try again "
                               f"later.", retryable=True)
            return CIError(f"GitHub kept answering with server errors for {where} after {retries}; try again "
                           f"later.", retryable=True)
        if isinstance(err, requests.HTTPError):  # the log download
            return CIError(f"Downloading a job log of {where} failed: {_short(err)}", retryable=True)
        if isinstance(err, requests.RequestException):
            return CIError(f"Cannot reach GitHub at {self._url}: check ci.github_actions.url and the network "
                           f"({type(err).__name__}).", retryable=True)
        return None


# --- GitLab CI ----------------------------------------------------------------------------------


class GitLabCILogs(_CILogs):
    """Failed jobs of a GitLab project's pipelines, through python-gitlab (GitLab.com or self-managed).

    Retries are python-gitlab's own (``obey_rate_limit`` honours 429 + Retry-After,
    ``retry_transient_errors`` covers 5xx and timeouts), ``max_retries`` per request; its backoff is
    fixed by the library (0.1 s doubling) unless the server sends Retry-After.
    """

    name = "gitlab_ci"
    setting = "ci.gitlab_ci"

    def __init__(self, project: str, token: str, url: str = "https://gitlab.com", *, timeout_s: float = 30,
                 max_retries: int = 5, max_runs: int = 200, per_page: int = 100, overlap_s: float = 300,
                 max_excerpt_lines: int = 60, max_log_bytes: int = MAX_LOG_BYTES) -> None:
        # overlap_s: pipelines are filtered by update time, which a finished job moves past its own end;
        # the overlap only absorbs clock skew and GitLab's strict "after".
        super().__init__(project, token, timeout_s=timeout_s, max_retries=max_retries, max_runs=max_runs,
                         per_page=per_page, overlap_s=overlap_s, max_excerpt_lines=max_excerpt_lines,
                         max_log_bytes=max_log_bytes)
        self._url = url.rstrip("/")
        self._call = {"max_retries": max_retries, "obey_rate_limit": True}

    def _open(self, stack: ExitStack, per_page: int) -> None:
        self._gl = stack.enter_context(gitlab.Gitlab(
            self._url, private_token=self._token, timeout=self.timeout_s, retry_transient_errors=True,
        ))
        self._project = self._gl.projects.get(self.project, lazy=True)

    def _runs(self, since: datetime | None) -> Iterator[_Run]:
        kwargs: dict[str, Any] = {"updated_after": iso_utc(since)} if since else {}
        pipelines = self._project.pipelines.list(iterator=True, scope="finished", order_by="updated_at",
                                                 sort="desc", per_page=self.per_page, **kwargs, **self._call)
        for p in pipelines:
            a = p.attributes
            yield _Run(id=a["id"], lineage=(a.get("ref"),), sha=a.get("sha") or "", branch=a.get("ref") or "",
                       pipeline=a.get("name") or f"#{a.get('iid', a['id'])}", created=iso_utc(a.get("created_at")),
                       updated=iso_utc(a.get("updated_at")), has_failures=a.get("status") == "failed",
                       can_pass=a.get("status") in ("success", "failed"), handle=p)

    def _jobs(self, run: _Run) -> Iterator[_Job]:
        for job in run.handle.jobs.list(iterator=True, per_page=self.per_page, **self._call):
            a = job.attributes
            yield _Job(id=a["id"], name=a.get("name") or "", passed=a.get("status") == "success",
                       failed=a.get("status") == "failed" and not a.get("allow_failure"), url=a.get("web_url") or "",
                       finished=iso_utc(a.get("finished_at")), handle=job)

    def _log(self, job: _Job) -> str:
        try:
            chunks = self._project.jobs.get(job.id, lazy=True).trace(streamed=True, iterator=True, chunk_size=1 << 16,
                                                                    **self._call)
        except gitlab.GitlabGetError as err:
            if err.response_code in (404, 410):
                return ""  # the trace was erased or expired
            raise
        return _read_bounded(chunks, self.max_log_bytes)

    def _newest(self) -> str | None:
        newest = self._project.pipelines.list(scope="finished", order_by="updated_at", sort="desc", per_page=1,
                                              get_all=False, **self._call)
        return iso_utc(newest[0].attributes.get("updated_at")) if newest else None

    def _translate(self, err: Exception) -> CIError | None:
        where = f"{self.project} at {self._url}"
        code = getattr(err, "response_code", None)
        if isinstance(err, gitlab.GitlabAuthenticationError) or code == 401:
            return CIError(f"GitLab rejected the token for {where} (401): put a valid token (scope read_api) in "
                           f"the environment variable that ci.gitlab_ci.token_env names.")
        if code == 403:
            return CIError(f"GitLab refused access to the pipelines of {where} (403 {_short(err.error_message)}): "
                           f"the token in the variable ci.gitlab_ci.token_env names needs the read_api scope and "
                           f"at least Reporter access to the project.")
        if code == 404:
            return CIError(f"GitLab has no project {self.project!r} at {self._url} that this token can see (404): "
                           f"check ci.gitlab_ci.project (group/name or numeric id) and ci.gitlab_ci.url.")
        if code == 429:
            return CIError(f"GitLab's rate limit for {where} was still exceeded after {self.max_retries} retries "
                           f"(ci.gitlab_ci.max_retries); try again later.", retryable=True)
        if isinstance(err, gitlab.GitlabParsingError):
            return CIError(f"{self._url} did not answer like a GitLab API (unparsable reply): check ci.gitlab_ci.url.")
        if isinstance(err, gitlab.GitlabError) and code is not None:
            return CIError(f"GitLab answered {code} {_short(err.error_message)} for {where}"
                           + (f" after {self.max_retries} retries (ci.gitlab_ci.max_retries)." if code >= 500 else "."),
                           retryable=code >= 500)
        if is_timeout(err):
            return CIError(f"GitLab ({self._url}) did not answer within {self.timeout_s:g}s, {self.max_retries} "
                           f"retries included: raise ci.gitlab_ci.timeout_s or try again later.", retryable=True)
        if isinstance(err, requests.RequestException):
            return CIError(f"Cannot reach GitLab at {self._url}: check ci.gitlab_ci.url and the network "
                           f"({type(err).__name__}).", retryable=True)
        return None
