"""Loopback stand-ins for the GitHub Actions and GitLab CI REST APIs, and job logs in their raw shapes.

The servers speak the wire format the real client libraries expect (PyGithub, python-gitlab): the
same paths, JSON fields, pagination headers, redirects and error bodies as the recorded answers in
the services' API documentation. Faults are scripted per path (``fail``): the next matching request
gets the scripted reply (429 with Retry-After, 5xx, a slow answer, 401) and later ones the normal one.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from urllib.parse import unquote, urlencode

from mochi_pipeline_tests.loopback import LoopbackServer, Reply, Request

# --- raw job logs as the services store them ----------------------------------------------------

ESC = "\x1b"


def _github_stamped(lines: list[str], start: str = "2024-05-01T10:01:00") -> str:
    """Lines as a GitHub job log: BOM, then each line behind a 7-digit-fraction UTC timestamp."""
    t0 = datetime.fromisoformat(start)
    out = [f"{(t0 + timedelta(milliseconds=37 * i)).strftime('%Y-%m-%dT%H:%M:%S.%f')}0Z {line}"
           for i, line in enumerate(lines)]
    return "\ufeff" + "\n".join(out) + "\n"


_PASSED = [f"tests/test_api.py::test_endpoint_{i} {ESC}[32mPASSED{ESC}[0m{' ' * 20}[{i:3d}%]" for i in range(70)]

PYTEST_GITHUB_LOG = _github_stamped([
    "##[group]Runner Image Provisioner",
    "Hosted Compute Agent",
    "Version: 20240422.3",
    "##[endgroup]",
    "##[group]Operating System",
    "Ubuntu",
    "22.04.4",
    "LTS",
    "##[endgroup]",
    "Secret source: Actions",
    "Prepare workflow directory",
    "##[group]Run actions/checkout@v4",
    "with:",
    "  repository: acme/widget",
    "##[endgroup]",
    "Syncing repository: acme/widget",
    "##[command]/usr/bin/git version",
    "git version 2.44.0",
    "remote: Enumerating objects: 412, done.        ",
    "Receiving objects:   1% (5/412)\rReceiving objects:  52% (215/412)\rReceiving objects: 100% (412/412), done.",
    "##[group]Run pip install -e .[test]",
    f"{ESC}[36;1mpip install -e .[test]{ESC}[0m",
    "shell: /usr/bin/bash -e {0}",
    "##[endgroup]",
    "Obtaining file:///home/runner/work/widget/widget",
    "Collecting requests>=2.31 (from widget==0.4.0)",
    "  Downloading requests-2.31.0-py3-none-any.whl.metadata (4.6 kB)",
    "Collecting numpy>=1.26 (from widget==0.4.0)",
    "  Downloading numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl (18.3 MB)",
    f"     {ESC}[38;5;197m━━━━━━━{ESC}[0m{ESC}[38;5;237m━━━━━━━━━━{ESC}[0m 6.1/18.3 MB 61.2 MB/s eta 0:00:01\r"
    f"     {ESC}[38;2;114;156;31m━━━━━━━━━━━━━━━━━{ESC}[0m 18.3/18.3 MB 72.0 MB/s eta 0:00:00",
    "Installing collected packages: numpy, requests, widget",
    "Successfully installed numpy-1.26.4 requests-2.31.0 widget-0.4.0",
    "##[group]Run pytest -v",
    f"{ESC}[36;1mpytest -v{ESC}[0m",
    "##[endgroup]",
    f"{ESC}[1m============================= test session starts =============================={ESC}[0m",
    "platform linux -- Python 3.11.9, pytest-8.2.0, pluggy-1.5.0",
    "collecting ... collected 72 items",
    "",
    *_PASSED,
    f"tests/test_parser.py::test_parse_header {ESC}[31mFAILED{ESC}[0m                      [ 98%]",
    f"tests/test_parser.py::test_parse_body {ESC}[32mPASSED{ESC}[0m                        [100%]",
    "",
    "=================================== FAILURES ===================================",
    f"{ESC}[31m{ESC}[1m______________________________ test_parse_header _______________________________{ESC}[0m",
    "",
    "    def test_parse_header():",
    "        header = parse_header(b'GET / HTTP/1.1\\r\\nHost: x\\r\\n')",
    ">       assert header.method == 'POST'",
    f"{ESC}[1m{ESC}[31mE       AssertionError: assert 'GET' == 'POST'{ESC}[0m",
    f"{ESC}[1m{ESC}[31mE         - POST{ESC}[0m",
    f"{ESC}[1m{ESC}[31mE         + GET{ESC}[0m",
    "",
    f"{ESC}[1m{ESC}[31mtests/test_parser.py{ESC}[0m:14: AssertionError",
    "=========================== short test summary info ============================",
    "FAILED tests/test_parser.py::test_parse_header - AssertionError: assert 'GET' == 'POST'",
    f"{ESC}[31m========================= {ESC}[1m1 failed{ESC}[0m, {ESC}[32m71 passed{ESC}[0m{ESC}[31m in 2.31s"
    f" ========================={ESC}[0m",
    "##[error]Process completed with exit code 1.",
    "Post job cleanup.",
    "##[command]/usr/bin/git version",
    "git version 2.44.0",
    "Temporarily overriding HOME='/home/runner/work/_temp/2b9b' before making global git config changes",
    "##[command]/usr/bin/git config --local --name-only --get-regexp core\\.sshCommand",
    "##[command]/usr/bin/git submodule foreach --recursive sh -c \"git config --local --name-only\"",
    "Cleaning up orphan processes",
])


def _gitlab_section(kind: str, name: str, when: int = 1714557660) -> str:
    return f"{ESC}[0Ksection_{kind}:{when}:{name}\r{ESC}[0K"


GO_TEST_GITLAB_LOG = "\n".join([
    f"{ESC}[0KRunning with gitlab-runner 16.11.0 (91a27b2a){ESC}[0;m",
    f"{ESC}[0K  on blue-4.saas-linux-small-amd64.runners-manager.gitlab.com/default J2nyww-s, "
    f"system ID: s_cf1798852952{ESC}[0;m",
    _gitlab_section("start", "prepare_executor")
    + f"{ESC}[0K{ESC}[36;1mPreparing the \"docker+machine\" executor{ESC}[0;m",
    f"{ESC}[0KUsing Docker executor with image golang:1.22 ...{ESC}[0;m",
    _gitlab_section("end", "prepare_executor"),
    _gitlab_section("start", "get_sources") + f"{ESC}[0K{ESC}[36;1mGetting source from Git repository{ESC}[0;m",
    f"{ESC}[32;1mFetching changes with git depth set to 20...{ESC}[0;m",
    "Initialized empty Git repository in /builds/acme/widget/.git/",
    f"{ESC}[32;1mChecking out 9f1c2e7d as detached HEAD (ref is main)...{ESC}[0;m",
    _gitlab_section("end", "get_sources"),
    _gitlab_section("start", "step_script")
    + f"{ESC}[0K{ESC}[36;1mExecuting \"step_script\" stage of the job script{ESC}[0;m",
    f"{ESC}[32;1m$ go test ./...{ESC}[0;m",
    "go: downloading github.com/stretchr/testify v1.9.0",
    "go: downloading golang.org/x/sync v0.7.0",
    "go: downloading github.com/davecgh/go-spew v1.1.1",
    "ok  \tgithub.com/acme/widget/internal/config\t0.011s",
    "=== RUN   TestParseDuration",
    "--- PASS: TestParseDuration (0.00s)",
    "=== RUN   TestRetryBackoff",
    "    backoff_test.go:42: ",
    "        \tError Trace:\t/builds/acme/widget/pkg/retry/backoff_test.go:42",
    "        \tError:      \tNot equal: ",
    "        \t            \texpected: 200ms",
    "        \t            \tactual  : 400ms",
    "        \tTest:       \tTestRetryBackoff",
    "--- FAIL: TestRetryBackoff (0.00s)",
    "FAIL",
    "FAIL\tgithub.com/acme/widget/pkg/retry\t0.014s",
    "ok  \tgithub.com/acme/widget/pkg/store\t0.090s",
    "FAIL",
    _gitlab_section("end", "step_script"),
    _gitlab_section("start", "cleanup_file_variables")
    + f"{ESC}[0K{ESC}[36;1mCleaning up project directory and file based variables{ESC}[0;m",
    _gitlab_section("end", "cleanup_file_variables"),
    f"{ESC}[31;1mERROR: Job failed: exit code 1",
    f"{ESC}[0;m",
]) + "\n"

# GitLab 17 with FF_TIMESTAMPS: "<time> <stream><O|E>[+] " before every line; "+" continues the line.
GITLAB_TIMESTAMPED_LOG = "\n".join([
    "2024-05-01T10:02:00.100000Z 00O Running with gitlab-runner 17.0.0 (44feccdf)",
    "2024-05-01T10:02:00.200000Z 00O " + _gitlab_section("start", "step_script")
    + f"{ESC}[0K{ESC}[36;1mExecuting \"step_script\" stage of the job script{ESC}[0;m",
    f"2024-05-01T10:02:01.000000Z 01O {ESC}[32;1m$ cargo test{ESC}[0;m",
    "2024-05-01T10:02:03.500000Z 01E thread 'main' panicked at src/li",
    "2024-05-01T10:02:03.500100Z 01E+ b.rs:10:5:",
    "2024-05-01T10:02:03.500200Z 01E index out of bounds: the len is 3 but the index is 7",
    "2024-05-01T10:02:03.600000Z 01E error: test failed, to rerun pass `--lib`",
    "2024-05-01T10:02:04.000000Z 00O " + _gitlab_section("end", "step_script"),
    f"2024-05-01T10:02:04.100000Z 00O {ESC}[31;1mERROR: Job failed: exit code 101",
]) + "\n"

_SPIN = "⠙⠹⠸⠼⠴⠦⠧⠇⠏⠋"
NPM_JEST_LOG = "\n".join([
    "$ npm ci",
    "".join(f"\r{ESC}[1G{s} reify:fsevents: timing reifyNode:node_modules/fsevents" for s in _SPIN)
    + f"\r{ESC}[1G{ESC}[K",
    "npm WARN deprecated inflight@1.0.6: This module is not supported, and leaks memory.",
    "npm WARN deprecated glob@7.2.3: Glob versions prior to v9 are no longer supported",
    "npm http fetch GET 200 https://registry.npmjs.org/jest 312ms (cache revalidated)",
    "",
    "added 412 packages, and audited 413 packages in 9s",
    "",
    "$ npm test",
    "",
    "> widget@1.4.0 test",
    "> jest --ci",
    "",
    *[f"PASS src/components/Button{i}.test.tsx" for i in range(40)],
    "FAIL src/utils/format.test.ts",
    "  ● formatPrice › rounds to two decimals",
    "",
    "    expect(received).toBe(expected) // Object.is equality",
    "",
    "    Expected: \"12.35\"",
    "    Received: \"12.345\"",
    "",
    "      12 |   it('rounds to two decimals', () => {",
    "    > 13 |     expect(formatPrice(12.345)).toBe('12.35');",
    "         |                                 ^",
    "      14 |   });",
    "",
    "      at Object.<anonymous> (src/utils/format.test.ts:13:33)",
    "",
    "Test Suites: 1 failed, 40 passed, 41 total",
    "Tests:       1 failed, 211 passed, 212 total",
    "Snapshots:   0 total",
    "Time:        6.912 s",
    "Ran all test suites.",
    "npm ERR! Lifecycle script `test` failed with error: ",
    "npm ERR! Error: command failed ",
    "npm ERR!   in workspace: widget@1.4.0 ",
    "npm ERR!   at location: /home/runner/work/widget/widget ",
]) + "\n"

CARGO_LOG = "\n".join([
    "$ cargo build --locked",
    f"{ESC}[1m{ESC}[32m    Updating{ESC}[0m crates.io index",
    *[f"{ESC}[1m{ESC}[32m  Downloaded{ESC}[0m crate{i} v0.{i}.0" for i in range(30)],
    *[f"{ESC}[1m{ESC}[32m   Compiling{ESC}[0m dep{i} v1.{i}.0" for i in range(30)],
    f"{ESC}[1m{ESC}[32m   Compiling{ESC}[0m widget v0.3.0 (/builds/acme/widget)",
    f"{ESC}[0m{ESC}[1m{ESC}[38;5;9merror[E0308]{ESC}[0m{ESC}[0m{ESC}[1m: mismatched types{ESC}[0m",
    f"{ESC}[0m {ESC}[0m{ESC}[0m{ESC}[1m{ESC}[38;5;12m--> {ESC}[0m{ESC}[0msrc/config.rs:27:20{ESC}[0m",
    f"{ESC}[0m   {ESC}[0m{ESC}[0m{ESC}[1m{ESC}[38;5;12m|{ESC}[0m",
    f"{ESC}[0m{ESC}[1m{ESC}[38;5;12m27{ESC}[0m{ESC}[0m {ESC}[0m{ESC}[0m{ESC}[1m{ESC}[38;5;12m|{ESC}[0m"
    f"{ESC}[0m {ESC}[0m{ESC}[0m    let port: u16 = value;{ESC}[0m",
    f"{ESC}[0m   {ESC}[0m{ESC}[0m{ESC}[1m{ESC}[38;5;12m|{ESC}[0m{ESC}[0m              {ESC}[0m"
    f"{ESC}[0m{ESC}[1m{ESC}[38;5;9m^^^^^{ESC}[0m {ESC}[0m{ESC}[0m{ESC}[1m{ESC}[38;5;9m"
    f"expected `u16`, found `&str`{ESC}[0m",
    "",
    f"{ESC}[0m{ESC}[1m{ESC}[38;5;9merror{ESC}[0m{ESC}[0m{ESC}[1m: could not compile `widget` (lib) due to 1 previous"
    f" error{ESC}[0m",
]) + "\n"


# --- scripted servers ---------------------------------------------------------------------------


def _iso(t: datetime | str) -> str:
    return t if isinstance(t, str) else t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).replace(tzinfo=None)


class ScriptedServer(LoopbackServer):
    """A loopback service with scripted faults and a token check."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self._faults: list[tuple[str, Reply]] = []
        self._fault_lock = threading.Lock()

    def fail(self, path_part: str, *replies: Reply) -> None:
        """The next ``len(replies)`` requests whose path contains ``path_part`` get these replies, in order."""
        with self._fault_lock:
            self._faults.extend((path_part, reply) for reply in replies)

    def handle(self, request: Request) -> Reply:
        with self._fault_lock:
            for i, (part, reply) in enumerate(self._faults):
                if part in request.path:
                    del self._faults[i]
                    return reply
        return self.route(request)

    def route(self, request: Request) -> Reply:  # pragma: no cover - overridden
        raise NotImplementedError

    def _page(self, items: list, request: Request, default: int) -> tuple[list, dict[str, str], int, int]:
        """One page of ``items`` by the request's page/per_page, with the Link header both services send."""
        per_page = max(1, min(100, int(request.query.get("per_page") or default)))
        page = max(1, int(request.query.get("page") or 1))
        pages = max(1, -(-len(items) // per_page))
        links = []

        def link(n: int, rel: str) -> str:
            query = {**request.query, "page": str(n), "per_page": str(per_page)}
            return f'<{self.url}{request.path}?{urlencode(query)}>; rel="{rel}"'

        if page < pages:
            links.append(link(page + 1, "next"))
        if page > 1:
            links.append(link(page - 1, "prev"))
        links += [link(1, "first"), link(pages, "last")]
        headers = {"Link": ", ".join(links)}
        return items[(page - 1) * per_page: page * per_page], headers, page, pages


class GitHubActionsServer(ScriptedServer):
    """``/repos/{owner}/{repo}/actions/...`` of the GitHub REST API (2022-11-28), GitHub.com paths."""

    def __init__(self, repo: str = "acme/widget", token: str = "ghp_LoopbackToken0123456789abcdefABCDEF") -> None:
        super().__init__(token)
        self.repo = repo
        self.runs: list[dict] = []  # creation order
        self.jobs: dict[int, list[dict]] = {}
        self.logs: dict[int, str | None] = {}
        self._workflows: dict[str, int] = {}
        self._next_job = 20_000_000_000

    def add_run(self, workflow: str, branch: str, sha: str, created: str,
                jobs: list[tuple[str, str, str | None]], head_repo: str | None = None, event: str = "push",
                status: str = "completed") -> int:
        """A workflow run whose jobs are (name, conclusion, raw log); the run's conclusion follows them."""
        run_id = 8_900_000_000 + len(self.runs) + 1
        workflow_id = self._workflows.setdefault(workflow, 95_000_000 + len(self._workflows))
        conclusions = {c for _, c, _ in jobs}
        conclusion = None if status != "completed" else (
            "failure" if "failure" in conclusions else "timed_out" if "timed_out" in conclusions else "success")
        created_at = _parse(created)
        finished = created_at + timedelta(minutes=4)
        api = f"{self.url}/repos/{self.repo}"
        head = head_repo or self.repo
        owner = self.repo.split("/")[0]
        self.runs.append({
            "id": run_id, "name": workflow, "node_id": f"WFR_kwLOA{run_id}", "head_branch": branch, "head_sha": sha,
            "path": f".github/workflows/{workflow.lower()}.yml", "display_title": f"Commit {sha[:7]}",
            "run_number": len(self.runs) + 100, "event": event, "status": status, "conclusion": conclusion,
            "workflow_id": workflow_id, "check_suite_id": 23_000_000_000 + run_id,
            "check_suite_node_id": f"CS_kwDOA{run_id}", "url": f"{api}/actions/runs/{run_id}",
            "html_url": f"https://github.com/{self.repo}/actions/runs/{run_id}", "pull_requests": [],
            "created_at": _iso(created_at), "updated_at": _iso(finished),
            "actor": {"login": "octocat", "id": 583231, "type": "User", "site_admin": False},
            "run_attempt": 1, "referenced_workflows": [], "run_started_at": _iso(created_at),
            "triggering_actor": {"login": "octocat", "id": 583231, "type": "User", "site_admin": False},
            "jobs_url": f"{api}/actions/runs/{run_id}/jobs", "logs_url": f"{api}/actions/runs/{run_id}/logs",
            "check_suite_url": f"{api}/check-suites/{23_000_000_000 + run_id}",
            "artifacts_url": f"{api}/actions/runs/{run_id}/artifacts",
            "cancel_url": f"{api}/actions/runs/{run_id}/cancel", "rerun_url": f"{api}/actions/runs/{run_id}/rerun",
            "previous_attempt_url": None, "workflow_url": f"{api}/actions/workflows/{workflow_id}",
            "head_commit": {
                "id": sha, "tree_id": sha[::-1], "message": f"Change {sha[:7]}", "timestamp": _iso(created_at),
                "author": {"name": "Octo Cat", "email": "octocat@example.com"},
                "committer": {"name": "GitHub", "email": "noreply@github.com"},
            },
            "repository": {"id": 1296269, "name": self.repo.split("/")[1], "full_name": self.repo, "private": False,
                           "owner": {"login": owner, "id": 1, "type": "Organization"}, "url": api},
            "head_repository": {"id": 1296269 if head == self.repo else 7_000_001, "name": head.split("/")[1],
                                "full_name": head, "private": False,
                                "owner": {"login": head.split("/")[0], "id": 2, "type": "User"},
                                "url": f"{self.url}/repos/{head}"},
        })
        self.jobs[run_id] = []
        for name, job_conclusion, log in jobs:
            self._next_job += 1
            job_id = self._next_job
            self.logs[job_id] = log
            self.jobs[run_id].append({
                "id": job_id, "run_id": run_id, "workflow_name": workflow, "head_branch": branch,
                "run_url": f"{api}/actions/runs/{run_id}", "run_attempt": 1, "node_id": f"CR_kwDOA{job_id}",
                "head_sha": sha, "url": f"{api}/actions/jobs/{job_id}",
                "html_url": f"https://github.com/{self.repo}/actions/runs/{run_id}/job/{job_id}",
                "status": "completed", "conclusion": job_conclusion, "created_at": _iso(created_at),
                "started_at": _iso(created_at + timedelta(seconds=5)), "completed_at": _iso(finished),
                "name": name, "steps": [
                    {"name": "Set up job", "status": "completed", "conclusion": "success", "number": 1,
                     "started_at": _iso(created_at), "completed_at": _iso(created_at)},
                    {"name": f"Run {name}", "status": "completed", "conclusion": job_conclusion, "number": 2,
                     "started_at": _iso(created_at), "completed_at": _iso(finished)},
                ],
                "check_run_url": f"{api}/check-runs/{job_id}", "labels": ["ubuntu-latest"], "runner_id": 7,
                "runner_name": "GitHub Actions 7", "runner_group_id": 2, "runner_group_name": "GitHub Actions",
            })
        return run_id

    def route(self, request: Request) -> Reply:
        if request.path.startswith("/results/"):  # the pre-signed log URL: no token needed or expected
            job_id = int(request.path.removeprefix("/results/").split(".")[0])
            return Reply(200, self.logs[job_id] or "")
        if request.headers.get("authorization") not in (f"token {self.token}", f"Bearer {self.token}"):
            return Reply(401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest",
                               "status": "401"})
        prefix = f"/repos/{self.repo}/actions/"
        if request.method != "GET" or not request.path.startswith(prefix):
            return self._not_found()
        parts = request.path.removeprefix(prefix).split("/")
        if parts == ["runs"]:
            return self._list_runs(request)
        if len(parts) == 3 and parts[0] == "runs" and parts[2] == "jobs" and int(parts[1]) in self.jobs:
            jobs, headers, _, _ = self._page(self.jobs[int(parts[1])], request, 30)
            return Reply(200, {"total_count": len(self.jobs[int(parts[1])]), "jobs": jobs}, headers)
        if len(parts) == 3 and parts[0] == "jobs" and parts[2] == "logs" and int(parts[1]) in self.logs:
            job_id = int(parts[1])
            if self.logs[job_id] is None:
                return Reply(410, {"message": "Gone", "documentation_url": "https://docs.github.com/rest"})
            return Reply(302, b"", {"Location": f"{self.url}/results/{job_id}.log?sv=2021-08-06&se=2024-05-01"
                                                f"T10%3A20%3A00Z&sr=b&sp=r&sig=c2lnbmF0dXJl"})
        return self._not_found()

    def _not_found(self) -> Reply:
        return Reply(404, {"message": "Not Found",
                           "documentation_url": "https://docs.github.com/rest/actions/workflow-runs",
                           "status": "404"})

    def _list_runs(self, request: Request) -> Reply:
        runs = list(reversed(self.runs))  # newest first, as GitHub lists them
        status = request.query.get("status")
        if status == "completed":
            runs = [r for r in runs if r["status"] == "completed"]
        elif status:
            runs = [r for r in runs if r["conclusion"] == status or r["status"] == status]
        created = request.query.get("created")
        if created:
            if not created.startswith(">="):
                return Reply(422, {"message": "Validation Failed", "status": "422"})
            since = _parse(created[2:])
            runs = [r for r in runs if _parse(r["created_at"]) >= since]
        page, headers, _, _ = self._page(runs, request, 30)
        return Reply(200, {"total_count": len(runs), "workflow_runs": page}, headers)


class GitLabServer(ScriptedServer):
    """``/api/v4/projects/:id/{pipelines,jobs}`` of the GitLab REST API (v4, GitLab 16/17)."""

    FINISHED = ("success", "failed", "canceled", "skipped")

    def __init__(self, project: str = "acme/widget", token: str = "glpat-LoopbackToken0123456789",
                 project_id: int = 278964) -> None:
        super().__init__(token)
        self.project = project
        self.project_id = project_id
        self.pipelines: list[dict] = []
        self.jobs: dict[int, list[dict]] = {}
        self.traces: dict[int, str | None] = {}
        self._next_job = 6_800_000_000

    def add_pipeline(self, ref: str, sha: str, created: str, jobs: list[tuple[str, str, str | None]],
                     updated: str | None = None, name: str | None = None, source: str = "push",
                     allow_failure: tuple[str, ...] = ()) -> int:
        """A pipeline whose jobs are (name, status, raw trace); its status follows the jobs."""
        pipeline_id = 1_270_000_000 + len(self.pipelines) + 1
        created_at = _parse(created)
        updated_at = _parse(updated) if updated else created_at + timedelta(minutes=6)
        failing = {s for n, s, _ in jobs if n not in allow_failure}
        status = "failed" if "failed" in failing else "running" if "running" in failing else "success"
        web = f"https://gitlab.example.com/{self.project}"
        self.pipelines.append({
            "id": pipeline_id, "iid": len(self.pipelines) + 1, "project_id": self.project_id, "sha": sha,
            "ref": ref, "status": status, "source": source, "created_at": _iso(created_at).replace("Z", ".000Z"),
            "updated_at": _iso(updated_at).replace("Z", ".512Z"), "web_url": f"{web}/-/pipelines/{pipeline_id}",
            "name": name,
        })
        self.jobs[pipeline_id] = []
        for job_name, job_status, trace in jobs:
            self._next_job += 1
            job_id = self._next_job
            self.traces[job_id] = trace
            self.jobs[pipeline_id].append({
                "id": job_id, "status": job_status, "stage": "test", "name": job_name, "ref": ref, "tag": False,
                "coverage": None, "allow_failure": job_name in allow_failure,
                "created_at": _iso(created_at).replace("Z", ".101Z"),
                "started_at": _iso(created_at + timedelta(seconds=20)).replace("Z", ".202Z"),
                "finished_at": _iso(updated_at - timedelta(seconds=30)).replace("Z", ".303Z"),
                "erased_at": None, "duration": 310.4, "queued_duration": 2.1,
                "user": {"id": 1, "username": "jdoe", "name": "Jane Doe", "state": "active"},
                "commit": {"id": sha, "short_id": sha[:8], "title": f"Change {sha[:7]}",
                           "author_name": "Jane Doe", "author_email": "jdoe@example.com",
                           "created_at": _iso(created_at)},
                "pipeline": {"id": pipeline_id, "project_id": self.project_id, "ref": ref, "sha": sha,
                             "status": status, "source": source},
                "failure_reason": "script_failure" if job_status == "failed" else None,
                "web_url": f"{web}/-/jobs/{job_id}", "project": {"ci_job_token_scope_enabled": False},
                "artifacts": [], "runner": {"id": 12270859, "description": "4-blue.saas-linux-small-amd64",
                                            "is_shared": True, "runner_type": "instance_type"},
                "artifacts_expire_at": None, "tag_list": [],
            })
        return pipeline_id

    def route(self, request: Request) -> Reply:
        if request.headers.get("private-token") != self.token:
            return Reply(401, {"message": "401 Unauthorized"})
        parts = [unquote(p) for p in request.path.split("/")]
        if parts[:4] != ["", "api", "v4", "projects"] or len(parts) < 6 or request.method != "GET":
            return Reply(404, {"error": "404 Not Found"})
        if parts[4] not in (self.project, str(self.project_id)):
            return Reply(404, {"message": "404 Project Not Found"})
        rest = parts[5:]
        if rest == ["pipelines"]:
            return self._list(self._pipelines(request), request)
        if len(rest) == 3 and rest[0] == "pipelines" and rest[2] == "jobs" and int(rest[1]) in self.jobs:
            return self._list(self.jobs[int(rest[1])], request)
        if len(rest) == 3 and rest[0] == "jobs" and rest[2] == "trace" and int(rest[1]) in self.traces:
            trace = self.traces[int(rest[1])]
            if trace is None:
                return Reply(404, {"message": "404 Not Found"})
            return Reply(200, trace.encode(), {"Content-Type": "text/plain; charset=utf-8"})
        return Reply(404, {"error": "404 Not Found"})

    def _pipelines(self, request: Request) -> list[dict]:
        q = request.query
        items = list(self.pipelines)
        if q.get("scope") == "finished":
            items = [p for p in items if p["status"] in self.FINISHED]
        if q.get("status"):
            items = [p for p in items if p["status"] == q["status"]]
        if q.get("ref"):
            items = [p for p in items if p["ref"] == q["ref"]]
        if q.get("updated_after"):  # strictly after, as GitLab's finder does
            items = [p for p in items if _parse(p["updated_at"]) > _parse(q["updated_after"])]
        key = q.get("order_by", "id")
        items.sort(key=lambda p: (p[key], p["id"]), reverse=q.get("sort", "desc") == "desc")
        return items

    def _list(self, items: list[dict], request: Request) -> Reply:
        page_items, headers, page, pages = self._page(items, request, 20)
        per_page = str(max(1, min(100, int(request.query.get("per_page") or 20))))
        headers.update({"X-Page": str(page), "X-Per-Page": per_page, "X-Total": str(len(items)),
                        "X-Total-Pages": str(pages), "X-Next-Page": str(page + 1) if page < pages else "",
                        "X-Prev-Page": str(page - 1) if page > 1 else ""})
        return Reply(200, page_items, headers)
