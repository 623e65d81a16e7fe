"""Issue trackers through their real client libraries (PyGithub, python-gitlab, jira) against local stand-ins.

Nothing is patched: each client is pointed at a loopback server speaking the service's wire format
(``tracker_wire``), and the tests assert on the records and on the requests the server saw.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import pytest

from mochi_pipeline.ingestion.issue_tracker import (
    GitHubTracker,
    GitLabTracker,
    JiraTracker,
    TrackerError,
    cursor,
    jira_text,
    merge_threads,
)
from mochi_pipeline.ingestion.web_api import iso_utc
from mochi_pipeline.records import IssueThread
from mochi_pipeline_tests.ingestion.tracker_wire import (
    GitHubStandIn,
    GitLabStandIn,
    Item,
    JiraStandIn,
    Note,
    TrackerStandIn,
)

TOKEN = "ghp-test-token-4f9a1c"
WRONG = "wrong-token-zz81"
SHA_A, SHA_B, SHA_C, SHA_F = "a" * 40, "b" * 40, "c" * 40, "f" * 40


def github_items() -> list[Item]:
    return [
        Item(1, "Crash on empty config", "2024-05-01T09:00:00Z", "2024-05-02T10:00:00Z", body="Empty mochi.yaml",
             labels=["bug"], state="closed", closed="2024-05-02T10:00:00Z", closed_by=[2], notes=[
                 Note("bob", "Same here.", "2024-05-01T10:00:00Z"),
                 Note("github-actions[bot]", "Thanks for the report!", "2024-05-01T09:01:00Z", bot=True),
                 Note("alice", "Traceback attached.", "2024-05-01T11:00:00Z")]),
        Item(2, "Fix crash on empty config", "2024-05-01T12:00:00Z", "2024-05-02T10:00:30Z", kind="pull",
             author="bob", body="Fixes #1", state="merged", closed="2024-05-02T10:00:00Z", merge_sha=SHA_A, notes=[
                 Note("carol", "Please add a test.", "2024-05-01T13:00:00Z", path="mochi/config.py"),
                 Note("carol", "", "2024-05-01T13:00:01Z", review="COMMENTED"),
                 Note("bob", "Test added.", "2024-05-01T14:00:00Z"),
                 Note("carol", "Looks good now.", "2024-05-01T15:00:00Z", review="APPROVED")]),
        Item(3, "Support TOML config", "2024-05-02T08:00:00Z", "2024-05-03T08:00:00Z",
             labels=["enhancement", "good first issue"]),
        Item(4, "Typo in README", "2024-05-02T09:00:00Z", "2024-05-03T09:00:00Z", state="closed",
             closed="2024-05-03T09:00:00Z", closing_commit=SHA_C),
        Item(5, "Bump torch", "2024-05-03T07:00:00Z", "2024-05-03T10:00:00Z", kind="pull", author="dependabot[bot]",
             bot=True),
        Item(6, "How do I resume training?", "2024-05-03T11:00:00Z", "2024-05-04T09:00:00Z", kind="discussion",
             author="dave", labels=["question"], answer=1, notes=[
                 Note("erin", "Try --resume.", "2024-05-03T12:00:00Z"),
                 Note("alice", "Set training.resume: true.", "2024-05-03T13:00:00Z",
                      replies=[Note("dave", "That worked, thanks!", "2024-05-03T14:00:00Z")])]),
        Item(7, "Unanswered question", "2024-05-04T08:00:00Z", "2024-05-04T10:00:00Z", kind="discussion"),
    ]


def gitlab_items() -> list[Item]:
    return [
        Item(1, "Login fails behind proxy", "2024-05-01T09:00:00Z", "2024-05-02T10:00:00Z", labels=["bug", "proxy"],
             state="closed", closed="2024-05-02T10:00:00Z", closed_by=[1],
             notes=[Note("bob", "Reproduced.", "2024-05-01T10:00:00Z")]),
        Item(2, "Docs: wrong flag", "2024-05-01T10:00:00Z", "2024-05-02T11:00:00Z", state="closed",
             closed="2024-05-02T11:00:00Z", closing_commit=SHA_C),
        Item(3, "Add dark mode", "2024-05-02T09:00:00Z", "2024-05-03T09:00:00Z", author="project_42_bot_7f3a"),
        Item(1, "Honor HTTPS_PROXY", "2024-05-01T12:00:00Z", "2024-05-02T10:00:05Z", kind="pull", author="bob",
             state="merged", closed="2024-05-02T10:00:00Z", merge_sha=SHA_A, squash_sha=SHA_B, notes=[
                 Note("carol", "nit: rename this", "2024-05-01T13:00:00Z", path="src/net.py"),
                 Note("bob", "Done.", "2024-05-01T14:00:00Z")]),
        Item(2, "Draft: dark mode", "2024-05-02T12:00:00Z", "2024-05-03T10:00:00Z", kind="pull"),
        Item(3, "Fast-forward fix", "2024-05-02T13:00:00Z", "2024-05-03T11:00:00Z", kind="pull", state="merged",
             closed="2024-05-03T11:00:00Z", head_sha=SHA_F),
    ]


def jira_items() -> list[Item]:
    return [
        Item(1, "Export fails on Windows", "2024-05-01T09:00:00Z", "2024-05-02T10:00:00Z", labels=["export"],
             body="h2. Steps\n# run {{mochi export}}", state="closed", closed="2024-05-02T10:00:00Z",
             notes=[Note(name, f"comment {k}", f"2024-05-01T1{k}:00:00Z") for k, name in
                    enumerate(["bob", "carol", "alice", "bob", "dave"])]),
        Item(2, "Add CSV export", "2024-05-01T10:00:00Z", "2024-05-03T08:00:00Z", body="*CSV* please"),
        Item(3, "Slow startup", "2024-05-02T09:00:00Z", "2024-05-04T08:00:00Z", author="automation", bot=True,
             notes=[Note("automation", "Triaged automatically.", "2024-05-02T09:05:00Z", bot=True)]),
        Item(4, "Flaky test", "2024-05-02T10:00:00Z", "2024-05-05T12:30:10Z"),
        Item(5, "Crash on exit", "2024-05-02T11:00:00Z", "2024-05-05T12:30:45Z", labels=["crash", "p1"]),
    ]


@dataclass
class Service:
    name: str
    server: TrackerStandIn
    listing: str  # path of the issue listing / search

    def tracker(self, token: str = TOKEN, **kw: Any):
        kw = {"timeout_s": 5, "max_retries": 2, "page_size": 2, **kw}
        if self.name == "github":
            kw = {"backoff_factor": 0.01, "min_interval_s": 0, **kw}
            return GitHubTracker(kw.pop("repo", "octo/widgets"), token, base_url=f"{self.server.url}/api/v3", **kw)
        if self.name == "gitlab":
            return GitLabTracker(kw.pop("project", "acme/tools/widgets"), token, url=self.server.url, **kw)
        return JiraTracker(kw.pop("project", "MOCHI"), url=self.server.url, token=token, **kw)


def _start(name: str) -> Service:
    if name == "github":
        return Service(name, GitHubStandIn(TOKEN, github_items()), "/api/v3/repos/octo/widgets/issues")
    if name == "gitlab":
        return Service(name, GitLabStandIn(TOKEN, gitlab_items()), "/api/v4/projects/42/issues")
    return Service(name, JiraStandIn(TOKEN, jira_items()), "/rest/api/2/search")


@pytest.fixture(params=["github", "gitlab", "jira"])
def service(request):
    svc = _start(request.param)
    with svc.server:
        yield svc


@pytest.fixture
def gh():
    svc = _start("github")
    with svc.server:
        yield svc


@pytest.fixture
def gl():
    svc = _start("gitlab")
    with svc.server:
        yield svc


@pytest.fixture
def jr():
    svc = _start("jira")
    with svc.server:
        yield svc


def by_id(threads: list[IssueThread]) -> dict[tuple[str, str], IssueThread]:
    return {(t.kind, t.number): t for t in threads}


# --- GitHub ----------------------------------------------------------------------------------


def test_github_full_fetch(gh):
    threads = list(gh.tracker().threads())
    found = by_id(threads)
    assert sorted(found) == [("discussion", "6"), ("issue", "1"), ("issue", "3"), ("issue", "4"),
                             ("pull_request", "2"), ("pull_request", "5")]
    web = f"{gh.server.url}/octo/widgets"

    crash = found["issue", "1"]
    assert (crash.tracker, crash.project, crash.state, crash.labels) == ("github", "octo/widgets", "closed", ["bug"])
    assert (crash.title, crash.body, crash.author, crash.url) == (
        "Crash on empty config", "Empty mochi.yaml", "alice", f"{web}/issues/1")
    assert (crash.created_at, crash.updated_at, crash.closed_at) == (
        "2024-05-01T09:00:00Z", "2024-05-02T10:00:00Z", "2024-05-02T10:00:00Z")
    assert [(c.author, c.author_is_bot, c.kind) for c in crash.comments] == [
        ("github-actions[bot]", True, "comment"), ("bob", False, "comment"), ("alice", False, "comment")]
    # The closed event names the merge commit; the merged pull request of this repository that
    # cross-references the issue closed it (another repository's did not).
    assert crash.closing_commits == [SHA_A]
    assert crash.closed_by == ["2"]

    fix = found["pull_request", "2"]
    assert (fix.state, fix.closing_commits, fix.body, fix.url) == ("merged", [SHA_A], "Fixes #1", f"{web}/pull/2")
    assert [(c.kind, c.path, c.body) for c in fix.comments] == [
        ("review_comment", "mochi/config.py", "Please add a test."), ("comment", "", "Test added."),
        ("review", "", "Looks good now.")]

    assert found["issue", "3"].labels == ["enhancement", "good first issue"]
    assert found["issue", "3"].comments == [] and found["issue", "3"].state == "open"
    assert (found["issue", "4"].closing_commits, found["issue", "4"].closed_by) == ([SHA_C], [])
    bump = found["pull_request", "5"]
    assert (bump.state, bump.author, bump.author_is_bot, bump.closing_commits) == (
        "open", "dependabot[bot]", True, [])  # an open pull request's test-merge commit does not count

    question = found["discussion", "6"]
    assert (question.state, question.labels, question.url) == ("closed", ["question"], f"{web}/discussions/6")
    assert [(c.author, c.body, c.accepted) for c in question.comments] == [
        ("erin", "Try --resume.", False), ("alice", "Set training.resume: true.", True),
        ("dave", "That worked, thanks!", False)]

    # Three pages of issues at page_size 2, oldest change first, all states.
    listing = gh.server.seen(gh.listing)
    listing = [r for r in listing if r.path == gh.listing]
    assert [r.query.get("page") for r in listing] == [None, "2", "3"]
    assert all(r.query["per_page"] == "2" and r.query["state"] == "all" and r.query["sort"] == "updated"
               and r.query["direction"] == "asc" and "since" not in r.query for r in listing)
    # Closing details only for closed issues; no hidden per-object requests from PyGithub's lazy completion.
    timelines = {r.path for r in gh.server.requests if r.path.endswith("/timeline")}
    assert timelines == {f"{gh.listing}/1/timeline", f"{gh.listing}/4/timeline"}
    assert not [r.path for r in gh.server.requests if re.search(r"/issues/\d+$|/users/", r.path)]
    assert {r.path for r in gh.server.requests if r.method == "POST"} == {"/api/graphql"}


def test_github_incremental(gh):
    tracker = gh.tracker()
    first = list(tracker.threads())
    since = cursor(first, "github")
    assert since == "2024-05-04T09:00:00Z"

    changed = gh.server.item(3)
    changed.updated = "2024-05-05T09:00:00Z"
    changed.notes.append(Note("frank", "Any progress?", "2024-05-05T09:00:00Z"))
    gh.server.requests.clear()
    fresh = list(tracker.threads(since=since))

    listing = [r for r in gh.server.requests if r.path == gh.listing]
    assert [r.query["since"] for r in listing] == [since]
    assert ("issue", "3") in by_id(fresh)
    assert all(t.updated_at == since for t in fresh if t.number != "3")  # only the boundary item comes again
    merged = merge_threads(first, fresh)
    assert len(merged) == len(first)
    assert merged[-1].number == "3" and merged[-1].comments[-1].body == "Any progress?"
    assert cursor(merged, "github") == "2024-05-05T09:00:00Z"


def test_github_max_items_stops_early(gh):
    threads = list(gh.tracker().threads(max_items=2))
    assert [t.number for t in threads] == ["1", "2"]
    assert [r.query.get("page") for r in gh.server.requests if r.path == gh.listing] == [None]


def test_github_rate_limit_reset_beyond_the_cap_is_retryable(gh, monkeypatch):
    waits: list[float] = []  # what the client chose to wait, recorded instead of slept (no clock)
    monkeypatch.setattr(time, "sleep", waits.append)
    gh.server.fail_next(gh.listing, GitHubStandIn.primary_rate_limit(reset_in_s=3600))
    with pytest.raises(TrackerError, match="rate limit") as err:
        list(gh.tracker(max_rate_limit_wait_s=1).threads())
    assert err.value.retryable
    # Given up at once: no wait for the reset and no second ask (a wait would be answered by the unscripted page).
    assert waits == [] and len(gh.server.seen(gh.listing)) == 1


def test_github_discussions_can_be_turned_off(gh):
    threads = list(gh.tracker(discussions=False).threads())
    assert {t.kind for t in threads} == {"issue", "pull_request"}
    assert not gh.server.seen("/api/graphql")


# --- GitLab ----------------------------------------------------------------------------------


def test_gitlab_full_fetch(gl):
    threads = list(gl.tracker().threads())
    found = by_id(threads)
    assert sorted(found) == [("issue", "1"), ("issue", "2"), ("issue", "3"),
                             ("merge_request", "1"), ("merge_request", "2"), ("merge_request", "3")]
    web = f"{gl.server.url}/acme/tools/widgets"

    login = found["issue", "1"]
    assert (login.tracker, login.project, login.state, login.labels) == (
        "gitlab", "acme/tools/widgets", "closed", ["bug", "proxy"])
    assert (login.url, login.created_at, login.closed_at) == (
        f"{web}/-/issues/1", "2024-05-01T09:00:00Z", "2024-05-02T10:00:00Z")
    assert [(c.author, c.body) for c in login.comments] == [("bob", "Reproduced.")]  # system notes skipped
    assert (login.closed_by, login.closing_commits) == (["1"], [SHA_A, SHA_B])
    assert (found["issue", "2"].closing_commits, found["issue", "2"].closed_by) == ([SHA_C], [])
    dark = found["issue", "3"]
    assert (dark.state, dark.author, dark.author_is_bot) == ("open", "project_42_bot_7f3a", True)

    proxy = found["merge_request", "1"]
    assert (proxy.state, proxy.closing_commits, proxy.closed_at) == ("merged", [SHA_A, SHA_B], "2024-05-02T10:00:00Z")
    assert [(c.kind, c.path, c.body) for c in proxy.comments] == [
        ("review_comment", "src/net.py", "nit: rename this"), ("comment", "", "Done.")]
    assert (found["merge_request", "2"].state, found["merge_request", "2"].closing_commits) == ("open", [])
    assert found["merge_request", "3"].closing_commits == [SHA_F]  # fast-forward: the head commit

    for listing in (gl.listing, "/api/v4/projects/42/merge_requests"):
        pages = [r for r in gl.server.requests if r.path == listing]
        assert [r.query.get("page") for r in pages] == [None, "2"]
        assert all(r.query["order_by"] == "updated_at" and r.query["sort"] == "asc" and r.query["per_page"] == "2"
                   and "updated_after" not in r.query for r in pages)
    assert gl.server.seen("/api/v4/projects/acme%2Ftools%2Fwidgets")
    # Closing details only for closed issues; notes only where there are user notes.
    assert sorted(r.path for r in gl.server.requests if r.path.endswith("/closed_by")) == [
        f"{gl.listing}/1/closed_by", f"{gl.listing}/2/closed_by"]
    assert not [r for r in gl.server.requests if r.path.endswith("/merge_requests/2/notes")]


def test_gitlab_incremental(gl):
    tracker = gl.tracker()
    first = list(tracker.threads())
    since = cursor(first, "gitlab")
    assert since == "2024-05-03T11:00:00Z"

    changed = gl.server.item(2, "pull")
    changed.updated = "2024-05-04T09:00:00Z"
    changed.notes.append(Note("carol", "Ready for review?", "2024-05-04T09:00:00Z"))
    gl.server.requests.clear()
    fresh = list(tracker.threads(since=since))

    for listing in (gl.listing, "/api/v4/projects/42/merge_requests"):
        assert [r.query["updated_after"] for r in gl.server.requests if r.path == listing] == [since]
    assert ("merge_request", "2") in by_id(fresh)
    assert all(t.updated_at == since for t in fresh if (t.kind, t.number) != ("merge_request", "2"))
    merged = merge_threads(first, fresh)
    assert len(merged) == 6  # issue 1 and merge request 1 share a number and both stay
    assert merged[-1].comments[-1].body == "Ready for review?"


# --- Jira ------------------------------------------------------------------------------------


def test_jira_full_fetch(jr):
    threads = list(jr.tracker().threads())
    assert [t.number for t in threads] == ["MOCHI-1", "MOCHI-2", "MOCHI-3", "MOCHI-4", "MOCHI-5"]
    export = threads[0]
    assert (export.tracker, export.project, export.kind, export.state, export.labels) == (
        "jira", "MOCHI", "issue", "closed", ["export"])
    # Jira answers in the server's zone (+0200); records are UTC.
    assert (export.created_at, export.updated_at, export.closed_at) == (
        "2024-05-01T09:00:00Z", "2024-05-02T10:00:00Z", "2024-05-02T10:00:00Z")
    assert (export.body, export.url, export.author) == (
        "h2. Steps\n# run {{mochi export}}", f"{jr.server.url}/browse/MOCHI-1", "alice")
    assert [c.body for c in export.comments] == [f"comment {k}" for k in range(5)]
    assert (export.closing_commits, export.closed_by) == ([], [])
    assert threads[1].state == "open" and threads[4].labels == ["crash", "p1"]

    searches = jr.server.seen(jr.listing)
    assert [r.query["startAt"] for r in searches] == ["0", "2", "4"]
    assert {r.query["jql"] for r in searches} == {'project = "MOCHI" ORDER BY updated ASC'}
    assert {r.query["maxResults"] for r in searches} == {"2"}
    # Two comments come with the search; the other three are paged from the comment resource.
    pages = jr.server.seen("/rest/api/2/issue/MOCHI-1/comment")
    assert [r.query["startAt"] for r in pages] == ["2", "4"]
    assert not jr.server.seen("/rest/api/2/myself")  # a full fetch needs no time zone


def test_jira_incremental_uses_the_users_time_zone(jr):
    tracker = jr.tracker()
    first = list(tracker.threads())
    since = cursor(first, "jira")
    assert since == "2024-05-05T12:30:45Z"

    changed = jr.server.item(2)
    changed.updated = "2024-05-06T08:00:00Z"
    jr.server.requests.clear()
    fresh = list(tracker.threads(since=since))

    # 12:30:45 UTC is 21:30 in Tokyo, the searching user's zone; JQL has minutes only.
    assert {r.query["jql"] for r in jr.server.seen(jr.listing)} == {
        'project = "MOCHI" AND updated >= "2024/05/05 21:30" ORDER BY updated ASC'}
    # MOCHI-4 (12:30:10) matches the minute but is older than the cursor: dropped.
    assert [t.number for t in fresh] == ["MOCHI-5", "MOCHI-2"]
    assert merge_threads(first, fresh)[-1].number == "MOCHI-2"


def test_jira_cloud_token_paging_and_app_accounts():
    server = JiraStandIn(TOKEN, jira_items(), email="me@example.com", cloud=True)
    with server:
        tracker = JiraTracker("MOCHI", url=server.url, token=TOKEN, email="me@example.com", page_size=2)
        threads = list(tracker.threads())
        searches = server.seen("/rest/api/2/search/jql")
    assert [t.number for t in threads] == ["MOCHI-1", "MOCHI-2", "MOCHI-3", "MOCHI-4", "MOCHI-5"]
    assert [bool(r.query.get("nextPageToken")) for r in searches] == [False, True, True]
    bot = threads[2]
    assert (bot.author, bot.author_is_bot, bot.comments[0].author_is_bot) == ("5b10automation", True, True)
    assert threads[0].author_is_bot is False
    assert "me@example.com" in repr(tracker) and TOKEN not in repr(tracker)


def test_jira_text_flattens_cloud_documents():
    adf = {"type": "doc", "version": 1, "content": [
        {"type": "heading", "attrs": {"level": 2}, "content": [{"type": "text", "text": "Steps"}]},
        {"type": "paragraph", "content": [
            {"type": "text", "text": "Run "}, {"type": "text", "text": "mochi", "marks": [{"type": "code"}]},
            {"type": "hardBreak"}, {"type": "mention", "attrs": {"id": "1", "text": "@bob"}}]},
        {"type": "bulletList", "content": [
            {"type": "listItem", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "one"}]}]},
            {"type": "listItem", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "two"}]}]}]},
        {"type": "codeBlock", "attrs": {"language": "python"}, "content": [{"type": "text", "text": "print(1)"}]},
    ]}
    assert jira_text(adf) == "## Steps\n\nRun mochi\n@bob\n\n- one\n- two\n\n```python\nprint(1)\n```"
    assert jira_text("h1. wiki *text*") == "h1. wiki *text*"
    assert jira_text(None) == ""


# --- every tracker: the client's own retries, and errors worded for a person ---------------------


def test_rate_limit_is_waited_out(service, caplog, monkeypatch):
    waits: list[float] = []  # what the client library chose to wait, recorded instead of slept (no clock)
    monkeypatch.setattr(time, "sleep", waits.append)
    caplog.set_level(logging.DEBUG)
    # The clients log through urllib3, whose level other libraries lower (the kubernetes client sets WARNING).
    caplog.set_level(logging.DEBUG, logger="urllib3")
    service.server.fail_next(service.listing, service.server.rate_limited("1"))
    threads = list(service.tracker().threads())
    assert any(w >= 1 for w in waits), waits  # Retry-After: 1 honoured
    assert len(threads) == {"github": 6, "gitlab": 6, "jira": 5}[service.name]
    first, second = service.server.seen(service.listing)[:2]
    assert first.query == second.query  # the same page, asked again
    assert caplog.records and TOKEN not in caplog.text  # even the clients' debug logs keep the token out


def test_server_error_is_retried(service):
    service.server.fail_next(service.listing, service.server.server_error())
    threads = list(service.tracker().threads())
    assert len(threads) == {"github": 6, "gitlab": 6, "jira": 5}[service.name]


def test_retries_used_up_is_retryable(service):
    service.server.fail_next(service.listing, *[service.server.server_error(500)] * 3)
    with pytest.raises(TrackerError) as err:
        list(service.tracker(max_retries=1).threads())
    assert err.value.retryable and "try again later" in str(err.value).lower()


def test_timeout_is_retryable(service):
    # PyGithub takes whole seconds only.
    timeout_s, retries = (1, 0) if service.name == "github" else (0.2, 1)
    service.server.delay_s = timeout_s + 1
    with pytest.raises(TrackerError, match=rf"within {timeout_s:g} s.*trackers\.{service.name}\.timeout_s") as err:
        list(service.tracker(timeout_s=timeout_s, max_retries=retries).threads())
    # Each try timed out and no more tries were made than allowed (a request reaching the server late only lowers this).
    assert err.value.retryable and len(service.server.requests) <= 1 + retries


def test_bad_token_names_the_setting_and_hides_the_token(service, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")  # other libraries lower it (kubernetes: WARNING)
    tracker = service.tracker(token=WRONG)
    with pytest.raises(TrackerError, match=rf"trackers\.{service.name}\.token_env") as err:
        list(tracker.threads())
    assert not err.value.retryable
    assert WRONG not in str(err.value) and WRONG not in repr(err.value) and WRONG not in repr(tracker)
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no library error chained on
    assert len(service.server.requests) == 1  # a 401 is not retried
    assert WRONG not in caplog.text


def test_unreachable_server_names_the_url(service):
    service.server.__exit__()  # nothing listens on the port any more
    with pytest.raises(TrackerError, match=rf"trackers\.{service.name}\.url") as err:
        list(service.tracker(max_retries=0).threads())
    assert err.value.retryable
    service.server.__enter__()  # for the fixture's teardown


def test_unknown_project_names_the_setting(service):
    key, wrong = {"github": ("repo", "octo/nope"), "gitlab": ("project", "acme/nope"),
                  "jira": ("project", "NOPE")}[service.name]
    with pytest.raises(TrackerError, match=rf"trackers\.{service.name}\.{key}") as err:
        list(service.tracker(**{key: wrong}).threads())
    assert not err.value.retryable


# --- settings and combining runs --------------------------------------------------------------


@pytest.mark.parametrize(("build", "setting"), [
    (lambda: GitHubTracker("octo/widgets", ""), "trackers.github.token_env"),
    (lambda: GitHubTracker("widgets", TOKEN), "trackers.github.repo"),
    (lambda: GitLabTracker("", TOKEN), "trackers.gitlab.project"),
    (lambda: JiraTracker("MO CHI", "https://jira.example.com", TOKEN), "trackers.jira.project"),
    (lambda: JiraTracker("MOCHI", "", TOKEN), "trackers.jira.url"),
])
def test_bad_settings_fail_before_any_request(build, setting):
    with pytest.raises(TrackerError, match=re.escape(setting)):
        build()


@pytest.mark.parametrize(("value", "expected"), [
    ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00Z"),
    ("2024-05-01T14:00:00.000+0200", "2024-05-01T12:00:00Z"),
    ("2024-05-01T12:00:00.123Z", "2024-05-01T12:00:00Z"),
    ("2024-05-01T07:00:00-05:00", "2024-05-01T12:00:00Z"),
    (None, ""),
])
def test_iso_utc(value, expected):
    assert iso_utc(value) == expected


def _thread(tracker: str, number: str, updated: str, kind: str = "issue", title: str = "t") -> IssueThread:
    return IssueThread(tracker=tracker, project="p", number=number, kind=kind, title=title, state="open",
                       updated_at=updated)


def test_merge_threads_fresh_wins_and_order_is_stable():
    earlier = [_thread("gitlab", "10", "2024-05-02T00:00:00Z"), _thread("gitlab", "9", "2024-05-01T00:00:00Z"),
               _thread("gitlab", "9", "2024-05-01T00:00:00Z", kind="merge_request"),
               _thread("jira", "P-2", "2024-05-03T00:00:00Z")]
    fresh = [_thread("gitlab", "9", "2024-05-04T00:00:00Z", title="new"),
             _thread("jira", "P-10", "2024-05-03T00:00:00Z")]
    merged = merge_threads(earlier, fresh)
    assert [(t.tracker, t.kind, t.number, t.title) for t in merged] == [
        ("gitlab", "merge_request", "9", "t"), ("gitlab", "issue", "10", "t"), ("jira", "issue", "P-2", "t"),
        ("jira", "issue", "P-10", "t"), ("gitlab", "issue", "9", "new")]
    assert merge_threads(merged, []) == merged
    assert cursor(merged, "gitlab") == "2024-05-04T00:00:00Z"
    assert cursor(merged, "jira") == "2024-05-03T00:00:00Z"
    assert cursor(merged, "github") is None and cursor([], "jira") is None


def test_latest_update_is_one_cheap_look_at_the_newest_change(service):
    newest = max(i.updated for i in service.server.items if i.kind != "discussion")  # discussions: not looked at
    tracker = service.tracker()
    before = len(service.server.requests)
    assert tracker.latest_update() == newest.replace(".000", "")
    looked = [r for r in service.server.requests[before:] if r.path.startswith(service.listing)
              or "/merge_requests" in r.path]
    assert looked and all(r.query.get("per_page", r.query.get("maxResults")) == "1" for r in looked)
    service.server.items[0].updated = "2030-01-01T00:00:00Z"
    assert tracker.latest_update() == "2030-01-01T00:00:00Z"
