"""Failed CI jobs: the real PyGithub / python-gitlab clients against loopback servers speaking each API,
and the pure log excerpt, cursor and merge."""

from __future__ import annotations

import logging
import re

import pytest

from mochi_pipeline.ingestion.ci_logs import (
    CIError,
    GitHubActionsLogs,
    GitLabCILogs,
    _read_bounded,
    clean_log,
    cursor,
    error_excerpt,
    merge_failures,
)
from mochi_pipeline.records import CIFailure
from mochi_pipeline_tests.ingestion.ci_wire import (
    CARGO_LOG,
    GITLAB_TIMESTAMPED_LOG,
    GO_TEST_GITLAB_LOG,
    NPM_JEST_LOG,
    PYTEST_GITHUB_LOG,
    GitHubActionsServer,
    GitLabServer,
)
from mochi_pipeline_tests.loopback import Reply

RUNS = "/repos/acme/widget/actions/runs"
PIPELINES = "/api/v4/projects/acme%2Fwidget/pipelines"
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z")


def sha(tag: str) -> str:
    return (tag * 40)[:40]


# --- error excerpt ----------------------------------------------------------------------------


@pytest.mark.parametrize(("log", "kept", "dropped"), [
    pytest.param(PYTEST_GITHUB_LOG, [
        "E       AssertionError: assert 'GET' == 'POST'",
        ">       assert header.method == 'POST'",
        "FAILED tests/test_parser.py::test_parse_header - AssertionError: assert 'GET' == 'POST'",
        "Error: Process completed with exit code 1.",
    ], ["##[", "Downloading numpy", "━━", "Receiving objects", "Post job cleanup", "Cleaning up orphan",
        "Successfully installed"], id="pytest-github"),
    pytest.param(GO_TEST_GITLAB_LOG, [
        "--- FAIL: TestRetryBackoff (0.00s)", "        \tError:      \tNot equal:",
        "        \t            \texpected: 200ms",
        "FAIL\tgithub.com/acme/widget/pkg/retry\t0.014s", "ERROR: Job failed: exit code 1",
    ], ["section_start", "section_end", "go: downloading", "[0K"], id="go-test-gitlab"),
    pytest.param(GITLAB_TIMESTAMPED_LOG, [
        "thread 'main' panicked at src/lib.rs:10:5:", "index out of bounds: the len is 3 but the index is 7",
        "ERROR: Job failed: exit code 101",
    ], ["00O", "01E", "section_"], id="cargo-gitlab-timestamps"),
    pytest.param(NPM_JEST_LOG, [
        "FAIL src/utils/format.test.ts", "    Expected: \"12.35\"", "    Received: \"12.345\"",
        "    > 13 |     expect(formatPrice(12.345)).toBe('12.35');", "npm ERR! Error: command failed",
    ], ["reify:fsevents", "npm WARN deprecated", "npm http fetch", "⠙"], id="npm-jest"),
    pytest.param(CARGO_LOG, [
        "error[E0308]: mismatched types", " --> src/config.rs:27:20",
        "   |              ^^^^^ expected `u16`, found `&str`",
        "error: could not compile `widget` (lib) due to 1 previous error",
    ], ["Downloaded crate", "Compiling dep", "Updating", "[38;5;9m"], id="cargo"),
])
def test_error_excerpt_keeps_the_failure_and_drops_the_noise(log, kept, dropped):
    excerpt = error_excerpt(log, max_lines=40)
    lines = excerpt.split("\n")
    assert len(lines) <= 40
    for line in kept:
        assert line in lines, line
    for noise in dropped:
        assert noise not in excerpt, noise
    assert "\x1b" not in excerpt and "\r" not in excerpt and "\ufeff" not in excerpt
    assert not STAMP.search(excerpt)
    assert error_excerpt(log, max_lines=40) == excerpt  # deterministic


@pytest.mark.parametrize("max_lines", [1, 2, 3, 5, 10, 25, 60])
def test_error_excerpt_respects_max_lines_and_marks_skipped_spans(max_lines):
    excerpt = error_excerpt(PYTEST_GITHUB_LOG, max_lines=max_lines)
    lines = excerpt.split("\n")
    assert 1 <= len(lines) <= max_lines
    kept = [line for line in lines if not line.startswith("[... ")]
    skipped = sum(int(m) for m in re.findall(r"^\[\.\.\. (\d+) lines skipped \.\.\.\]$", excerpt, re.M))
    assert len(kept) + skipped == len(clean_log(PYTEST_GITHUB_LOG))  # every line is shown or counted
    assert all(a != b for a, b in zip(lines, lines[1:], strict=False) if a.startswith("[... "))
    if max_lines >= 3:
        assert "Error: Process completed with exit code 1." in lines


def test_error_excerpt_of_a_short_log_is_the_whole_cleaned_log():
    log = "\x1b[32;1m$ make test\x1b[0;m\n\n\n\nok\r\n"
    assert error_excerpt(log) == "$ make test\n\nok"


@pytest.mark.parametrize(("raw", "clean"), [
    ("Downloading 10%\rDownloading 50%\rBuilt 3 targets\r", ["Built 3 targets"]),
    ("\x1b[2K\x1b[1Gstep 1/3\x1b[1Gstep 3/3 done", ["step 3/3 done"]),
    ("2024-05-01T12:00:00.1234567Z ##[group]Run make\n2024-05-01T12:00:00.2Z make: *** [all] Error 2\n"
     "2024-05-01T12:00:00.3Z ##[endgroup]\n2024-05-01T12:00:00.4Z ##[error]Process completed with exit code 2.",
     ["Run make", "make: *** [all] Error 2", "Error: Process completed with exit code 2."]),
    ("2024-05-01T12:00:00.1Z ##[warning]Node.js 16 actions are deprecated.\n"
     "2024-05-01T12:00:00.2Z ##[debug]Evaluating condition", ["Warning: Node.js 16 actions are deprecated."]),
    ("\x1b[0Ksection_start:1714557660:build[collapsed=true]\r\x1b[0K\x1b[36;1mBuild\x1b[0;m\n"
     "\x1b[0Ksection_end:1714557661:build\r\x1b[0K\n$ ls", ["Build", "$ ls"]),
    ("2024-05-01T10:00:00.1Z 00O partial wri\n2024-05-01T10:00:00.2Z 00O+ te joined\n"
     "2024-05-01T10:00:00.3Z 01E next", ["partial write joined", "next"]),
    ("a\n\n\n\nb\nb\nb\n\n", ["a", "", "b"]),
    ("\x1b]0;title\x07\x1b(Bplain\x07 text\x00", ["plain text"]),
    ("Collecting numpy\n  Using cached numpy-1.26.4.whl (18 MB)\nRequirement already satisfied: six in /usr\n"
     "ERROR: No matching distribution found for numpyy", ["ERROR: No matching distribution found for numpyy"]),
])
def test_clean_log(raw, clean):
    assert clean_log(raw) == clean


def test_error_excerpt_repeated_errors_take_one_window():
    log = "\n".join(
        [f"line {i}" for i in range(100)]
        + ["ConnectionError: upstream reset"] * 1  # once near the start of the second half
        + [f"retry {i}" for i in range(30)]
        + [f"line {i}b" if i % 2 else "ConnectionError: upstream reset" for i in range(60)]
        + ["exit code 1"]
    )
    excerpt = error_excerpt(log, max_lines=30)
    assert len(excerpt.split("\n")) <= 30
    assert excerpt.count("ConnectionError: upstream reset") <= 10  # the tail's copies plus the first window
    assert excerpt.split("\n").index("ConnectionError: upstream reset") < excerpt.split("\n").index("retry 0")


def test_a_huge_log_keeps_its_start_and_its_end():
    chunks = [b"first line\n", *(b"x" * 999 + b"\n" for _ in range(100)), b"last line\n"]
    text = _read_bounded(chunks, limit=4000)
    assert text.startswith("first line\n") and text.endswith("last line\n")
    assert "\n[... log truncated ...]\n" in text and len(text) < 4100
    assert _read_bounded([b"ok\n", b"", "é".encode()], limit=4000) == "ok\né"


def test_error_excerpt_rejects_a_zero_budget():
    with pytest.raises(ValueError):
        error_excerpt("x", max_lines=0)


# --- merge and cursor -------------------------------------------------------------------------


def _failure(job_id: str, failed_at: str, fixed_by: str = "", system: str = "github_actions") -> CIFailure:
    return CIFailure(system=system, project="acme/widget", pipeline="CI", job="test", job_id=job_id,
                     commit=sha("a"), failed_at=failed_at, excerpt="E boom", fixed_by=fixed_by)


def test_merge_failures_fresh_wins_but_keeps_a_known_fix():
    earlier = [_failure("1", "2024-05-01T10:00:00Z"), _failure("2", "2024-05-01T11:00:00Z", fixed_by=sha("c")),
               _failure("1", "2024-05-01T09:00:00Z", system="gitlab_ci")]
    fresh = [_failure("1", "2024-05-01T10:00:00Z", fixed_by=sha("d")), _failure("2", "2024-05-01T11:00:00Z"),
             _failure("3", "2024-05-01T12:00:00Z")]
    merged = merge_failures(earlier, fresh)
    assert [(f.system, f.job_id, f.fixed_by) for f in merged] == [
        ("gitlab_ci", "1", ""), ("github_actions", "1", sha("d")), ("github_actions", "2", sha("c")),
        ("github_actions", "3", "")]
    assert merge_failures(list(reversed(earlier)), list(reversed(fresh))) == merged  # order-independent


@pytest.mark.parametrize(("failures", "expected"), [
    ([], None),
    ([_failure("1", "2024-05-01T10:00:00Z", sha("f")), _failure("2", "2024-05-02T10:00:00Z", sha("f"))],
     "2024-05-02T10:00:00Z"),  # all fixed: the newest
    ([_failure("1", "2024-05-01T10:00:00Z", sha("f")), _failure("2", "2024-05-02T10:00:00Z"),
      _failure("3", "2024-05-03T10:00:00Z")], "2024-05-02T10:00:00Z"),  # the oldest unfixed
    ([_failure("1", "2024-04-01T10:00:00Z"), _failure("2", "2024-05-02T10:00:00Z", sha("f"))],
     "2024-05-02T10:00:00Z"),  # unfixed but past the relink horizon: it no longer holds the cursor
    ([_failure("1", "2024-05-01T10:00:00Z", system="gitlab_ci")], None),  # another system's
])
def test_cursor(failures, expected):
    assert cursor(failures, "github_actions") == expected


# --- GitHub Actions ---------------------------------------------------------------------------


def github_history(server: GitHubActionsServer) -> None:
    run = server.add_run
    run("CI", "main", sha("a1"), "2024-05-01T10:00:00Z", [("lint", "success", "ok"),
                                                          ("test (3.11)", "failure", PYTEST_GITHUB_LOG)])
    run("Docs", "main", sha("d1"), "2024-05-01T10:20:00Z", [("test (3.11)", "success", "ok")])  # other workflow
    run("CI", "main", sha("f1"), "2024-05-01T10:30:00Z", [("test (3.11)", "success", "ok")],
        head_repo="forker/widget", event="pull_request")  # a fork's main branch
    run("CI", "main", sha("a2"), "2024-05-01T11:00:00Z", [("lint", "success", "ok"),
                                                          ("test (3.11)", "failure", PYTEST_GITHUB_LOG)])
    run("CI", "feature/x", sha("b1"), "2024-05-01T11:30:00Z", [("test (3.11)", "success", "ok")])
    run("CI", "main", sha("a3"), "2024-05-01T12:00:00Z", [("lint", "failure", NPM_JEST_LOG),
                                                          ("test (3.11)", "success", "ok")])
    run("CI", "main", sha("a4"), "2024-05-01T13:00:00Z", [("lint", "success", "ok"),
                                                          ("test (3.11)", "success", "ok")])
    run("CI", "feature/x", sha("b2"), "2024-05-01T14:00:00Z", [("build", "failure", CARGO_LOG),
                                                               ("docs", "failure", None)])  # log expired
    run("CI", "main", sha("a5"), "2024-05-01T14:30:00Z", [("test (3.11)", "failure", "boom")],
        status="in_progress")  # not finished: not listed


def github(server: GitHubActionsServer, token: str | None = None, **kwargs) -> GitHubActionsLogs:
    options = {"timeout_s": 5, "max_retries": 2, "per_page": 2, "backoff_factor": 0, "seconds_between_requests": 0,
               "overlap_s": 3600, **kwargs}
    return GitHubActionsLogs(server.repo, token or server.token, server.url, **options)


@pytest.fixture
def gh_server():
    with GitHubActionsServer() as server:
        github_history(server)
        yield server


def summary(failures: list[CIFailure]) -> list[tuple[str, str, str, str]]:
    return [(f.branch, f.job, f.commit[:2], f.fixed_by[:2]) for f in failures]


def test_github_failed_jobs_become_linked_records(gh_server):
    failures = list(github(gh_server).failures(None))
    assert summary(failures) == [
        ("main", "test (3.11)", "a1", "a3"),  # not d1 (other workflow), f1 (fork), a2 (failed again)
        ("main", "test (3.11)", "a2", "a3"),
        ("main", "lint", "a3", "a4"),
        ("feature/x", "build", "b2", ""),
        ("feature/x", "docs", "b2", ""),
    ]
    first = failures[0]
    assert first.system == "github_actions" and first.project == "acme/widget" and first.pipeline == "CI"
    assert first.failed_at == "2024-05-01T10:04:00Z"
    assert re.fullmatch(r"https://github\.com/acme/widget/actions/runs/\d+/job/\d+", first.url)
    assert first.job_id == str(gh_server.jobs[gh_server.runs[0]["id"]][1]["id"])
    assert "E       AssertionError: assert 'GET' == 'POST'" in first.excerpt.split("\n")
    assert "\x1b" not in first.excerpt and not STAMP.search(first.excerpt) and "##[" not in first.excerpt
    assert "error[E0308]: mismatched types" in failures[3].excerpt
    assert failures[4].excerpt == ""  # 410 Gone: the log expired

    listed = gh_server.seen(RUNS)
    run_pages = [r for r in listed if r.path == RUNS]
    assert [r.query.get("page", "1") for r in run_pages] == ["1", "2", "3", "4"]  # 8 finished runs, 2 a page
    assert all(r.query["status"] == "completed" and "created" not in r.query for r in run_pages)
    jobs_listed = [r.path for r in listed if r.path.endswith("/jobs") and r.query.get("page", "1") == "1"]
    assert len(jobs_listed) == len(set(jobs_listed))  # each run's jobs listed at most once
    docs_run = gh_server.runs[1]["id"]
    assert f"{RUNS}/{docs_run}/jobs" not in jobs_listed  # never a candidate: other workflow
    downloads = gh_server.seen("/results/")
    assert len(downloads) == 4 and all("authorization" not in r.headers for r in downloads)


def test_github_incremental_fetch_relinks_the_unfixed(gh_server):
    client = github(gh_server)
    first = list(client.failures(None))
    since = cursor(first, client.name)
    assert since == "2024-05-01T14:04:00Z"  # b2's failures: the oldest unfixed
    gh_server.add_run("CI", "feature/x", sha("b3"), "2024-05-01T15:00:00Z", [("build", "success", "ok"),
                                                                              ("docs", "failure", "still broken")])
    gh_server.add_run("CI", "main", sha("a6"), "2024-05-01T15:30:00Z", [("test (3.11)", "failure", "Error: x")])
    before = len(gh_server.requests)
    fresh = list(client.failures(since))
    second = gh_server.requests[before:]
    assert {r.query.get("created") for r in second if r.path == RUNS} == {">=2024-05-01T13:04:00Z"}
    assert summary(fresh) == [("feature/x", "build", "b2", "b3"), ("feature/x", "docs", "b2", ""),
                              ("feature/x", "docs", "b3", ""), ("main", "test (3.11)", "a6", "")]
    merged = merge_failures(first, fresh)
    assert summary(merged) == summary(first)[:3] + summary(fresh)
    assert cursor(merged, client.name) == "2024-05-01T14:04:00Z"  # b2's docs job is still unfixed


def test_github_latest_update(gh_server):
    assert github(gh_server).latest_update() == "2024-05-01T14:04:00Z"
    assert gh_server.seen(RUNS)[-1].query["per_page"] == "1"


@pytest.mark.parametrize("fault", [
    Reply(429, {"message": "API rate limit exceeded"}, {"Retry-After": "1"}),
    Reply(403, {"message": "You have exceeded a secondary rate limit."}, {"Retry-After": "1"}),
    Reply(502, "<html><body><h1>502 Bad Gateway</h1></body></html>"),
    Reply(503, {"message": "Service Unavailable"}),
    Reply(200, {"total_count": 0, "workflow_runs": []}, delay_s=3),  # slower than the 1 s timeout
], ids=["429-retry-after", "403-secondary-rate-limit", "502", "503", "timeout"])
def test_github_transient_faults_are_retried(gh_server, fault):
    gh_server.fail(RUNS, fault)
    failures = list(github(gh_server, timeout_s=1, max_retries=1).failures(None))
    assert len(failures) == 5
    assert len([r for r in gh_server.seen(RUNS) if r.path == RUNS and "page" not in r.query]) == 2


def _assert_secret_kept(err: CIError, client, token: str, caplog) -> None:
    for text in (str(err), repr(err), repr(client), caplog.text):
        assert token not in text


@pytest.mark.parametrize(("faults", "retryable", "says"), [
    ([Reply(500, {"message": "Server Error"})] * 3, True, "ci.github_actions.max_retries"),
    ([Reply(429, {"message": "API rate limit exceeded"}, {"Retry-After": "0"})] * 3, True, "rate limit"),
    ([Reply(200, {"total_count": 0, "workflow_runs": []}, delay_s=3)] * 2, True, "ci.github_actions.timeout_s"),
    ([Reply(403, {"message": "Resource not accessible by personal access token",
                  "documentation_url": "https://docs.github.com/rest/actions/workflow-runs"})], False,
     "ci.github_actions.token_env"),
    ([Reply(404, {"message": "Not Found"})], False, "ci.github_actions.repo"),
], ids=["5xx-exhausted", "429-exhausted", "timeout-exhausted", "403-permission", "404-repo"])
def test_github_errors_are_worded_for_the_person(gh_server, faults, retryable, says, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")  # other libraries lower it (kubernetes: WARNING)
    gh_server.fail(RUNS, *faults)
    client = github(gh_server, timeout_s=1, max_retries=2 if len(faults) == 3 else 1)
    with pytest.raises(CIError) as info:
        list(client.failures(None))
    assert info.value.retryable is retryable
    assert says in str(info.value)
    _assert_secret_kept(info.value, client, gh_server.token, caplog)


def test_github_bad_token(gh_server, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")  # other libraries lower it (kubernetes: WARNING)
    wrong = "ghp_WrongToken9876543210zyxwvutsrqpONMLK"
    client = github(gh_server, token=wrong)
    for call in (lambda: list(client.failures("2024-05-01")), client.latest_update):
        with pytest.raises(CIError) as info:
            call()
        assert not info.value.retryable
        assert "ci.github_actions.token_env" in str(info.value) and "401" in str(info.value)
        _assert_secret_kept(info.value, client, wrong, caplog)
    assert len(gh_server.seen(RUNS)) == 2  # a 401 is not retried


def test_since_must_be_a_date(gh_server):
    with pytest.raises(CIError, match="ci.start_date") as info:
        list(github(gh_server).failures("last tuesday"))
    assert not info.value.retryable


# --- GitLab CI --------------------------------------------------------------------------------


def gitlab_history(server: GitLabServer) -> None:
    pipeline = server.add_pipeline
    pipeline("main", sha("a1"), "2024-05-01T10:00:00Z", [("lint", "success", "ok"),
                                                         ("test", "failed", GO_TEST_GITLAB_LOG)])
    pipeline("feature/x", sha("b1"), "2024-05-01T10:30:00Z", [("test", "success", "ok")])  # other ref
    pipeline("main", sha("a2"), "2024-05-01T11:00:00Z", [("test", "failed", GITLAB_TIMESTAMPED_LOG),
                                                         ("e2e", "failed", "flaky")], allow_failure=("e2e",))
    pipeline("main", sha("a3"), "2024-05-01T12:00:00Z", [("lint", "failed", CARGO_LOG), ("test", "success", "ok")],
             name="Nightly")
    pipeline("main", sha("a4"), "2024-05-01T13:00:00Z", [("lint", "success", "ok"), ("test", "success", "ok")])
    pipeline("feature/x", sha("b2"), "2024-05-01T14:00:00Z", [("test", "failed", NPM_JEST_LOG),
                                                              ("docs", "failed", None)])  # trace erased
    pipeline("main", sha("a5"), "2024-05-01T14:30:00Z", [("test", "running", None)])  # not finished


def gitlab_client(server: GitLabServer, token: str | None = None, **kwargs) -> GitLabCILogs:
    options = {"timeout_s": 5, "max_retries": 2, "per_page": 2, "overlap_s": 300, **kwargs}
    return GitLabCILogs(server.project, token or server.token, server.url, **options)


@pytest.fixture
def gl_server():
    with GitLabServer() as server:
        gitlab_history(server)
        yield server


def test_gitlab_failed_jobs_become_linked_records(gl_server):
    failures = list(gitlab_client(gl_server).failures(None))
    assert summary(failures) == [
        ("main", "test", "a1", "a3"),  # not b1 (other ref); a2 failed again
        ("main", "test", "a2", "a3"),  # its allowed-to-fail e2e job is no failure
        ("main", "lint", "a3", "a4"),
        ("feature/x", "test", "b2", ""),
        ("feature/x", "docs", "b2", ""),
    ]
    first = failures[0]
    assert first.system == "gitlab_ci" and first.project == "acme/widget" and first.pipeline == "#1"
    assert failures[2].pipeline == "Nightly"
    assert first.failed_at == "2024-05-01T10:05:30Z"
    assert first.url == f"https://gitlab.example.com/acme/widget/-/jobs/{first.job_id}"
    assert "--- FAIL: TestRetryBackoff (0.00s)" in first.excerpt.split("\n")
    assert "section_" not in first.excerpt and "\x1b" not in first.excerpt
    assert "thread 'main' panicked at src/lib.rs:10:5:" in failures[1].excerpt.split("\n")
    assert failures[4].excerpt == ""

    pages = [r for r in gl_server.seen(PIPELINES) if r.path == PIPELINES]
    assert [r.query.get("page", "1") for r in pages] == ["1", "2", "3"]  # 6 finished pipelines, 2 a page
    assert all(r.query["scope"] == "finished" and r.query["order_by"] == "updated_at" and r.query["sort"] == "desc"
               for r in pages)
    jobs_listed = [r.path for r in gl_server.seen(PIPELINES) if r.path.endswith("/jobs")
                   and r.query.get("page", "1") == "1"]
    assert len(jobs_listed) == len(set(jobs_listed))
    assert f"{PIPELINES}/{gl_server.pipelines[1]['id']}/jobs" not in jobs_listed  # b1: never a candidate


def test_gitlab_incremental_fetch_relinks_the_unfixed(gl_server):
    client = gitlab_client(gl_server)
    first = list(client.failures(None))
    since = cursor(first, client.name)
    assert since == "2024-05-01T14:05:30Z"
    gl_server.add_pipeline("feature/x", sha("b3"), "2024-05-01T15:00:00Z", [("test", "success", "ok"),
                                                                             ("docs", "success", "ok")])
    before = len(gl_server.requests)
    fresh = list(client.failures(since))
    second = [r for r in gl_server.requests[before:] if r.path == PIPELINES]
    assert {r.query["updated_after"] for r in second} == {"2024-05-01T14:00:30Z"}
    assert summary(fresh) == [("feature/x", "test", "b2", "b3"), ("feature/x", "docs", "b2", "b3")]
    merged = merge_failures(first, fresh)
    assert summary(merged) == summary(first)[:3] + summary(fresh)
    assert cursor(merged, client.name) == "2024-05-01T14:05:30Z"  # all fixed: the newest


def test_gitlab_latest_update(gl_server):
    latest = gitlab_client(gl_server).latest_update()
    assert latest == "2024-05-01T14:06:00Z"
    assert gl_server.seen(PIPELINES)[-1].query["per_page"] == "1"


@pytest.mark.parametrize("fault", [
    Reply(429, {"message": "Retry later"}, {"Retry-After": "1"}),
    Reply(502, "<html><body><h1>502 Bad Gateway</h1></body></html>"),
    Reply(500, {"message": "500 Internal Server Error"}),
    Reply(200, [], delay_s=3),  # slower than the 0.5 s timeout
], ids=["429-retry-after", "502", "500", "timeout"])
def test_gitlab_transient_faults_are_retried(gl_server, fault):
    gl_server.fail(PIPELINES, fault)
    failures = list(gitlab_client(gl_server, timeout_s=0.5, max_retries=1).failures(None))
    assert len(failures) == 5
    assert len([r for r in gl_server.seen(PIPELINES) if r.path == PIPELINES and "page" not in r.query]) == 2


@pytest.mark.parametrize(("faults", "retryable", "says"), [
    ([Reply(500, {"message": "500 Internal Server Error"})] * 3, True, "ci.gitlab_ci.max_retries"),
    ([Reply(429, {"message": "Retry later"}, {"Retry-After": "0"})] * 3, True, "rate limit"),
    ([Reply(200, [], delay_s=3)] * 3, True, "ci.gitlab_ci.timeout_s"),
    ([Reply(403, {"message": "403 Forbidden"})], False, "ci.gitlab_ci.token_env"),
    ([Reply(404, {"message": "404 Project Not Found"})], False, "ci.gitlab_ci.project"),
], ids=["5xx-exhausted", "429-exhausted", "timeout-exhausted", "403-scope", "404-project"])
def test_gitlab_errors_are_worded_for_the_person(gl_server, faults, retryable, says, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")  # other libraries lower it (kubernetes: WARNING)
    gl_server.fail(PIPELINES, *faults)
    client = gitlab_client(gl_server, timeout_s=0.5, max_retries=2)
    with pytest.raises(CIError) as info:
        list(client.failures(None))
    assert info.value.retryable is retryable
    assert says in str(info.value)
    _assert_secret_kept(info.value, client, gl_server.token, caplog)


def test_gitlab_bad_token(gl_server, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="urllib3")  # other libraries lower it (kubernetes: WARNING)
    wrong = "glpat-WrongToken9876543210zyxw"
    client = gitlab_client(gl_server, token=wrong)
    for call in (lambda: list(client.failures("2024-05-01T00:00:00Z")), client.latest_update):
        with pytest.raises(CIError) as info:
            call()
        assert not info.value.retryable
        assert "ci.gitlab_ci.token_env" in str(info.value) and "401" in str(info.value)
        _assert_secret_kept(info.value, client, wrong, caplog)
    assert len(gl_server.seen(PIPELINES)) == 2  # a 401 is not retried
