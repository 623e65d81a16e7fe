"""Stand-ins for GitHub (REST v3 + discussions GraphQL), GitLab (REST v4) and Jira (REST v2) on 127.0.0.1.

They speak each service's wire format as recorded from the real APIs (field names, pagination headers,
error bodies), so the real client libraries run unchanged against them through their base-URL settings.
Tests describe a project's tracker once as ``Item``s; each stand-in renders them its own way. Failures are
scripted per path prefix (``fail_next``), and ``delay_s`` slows every answer (client timeouts).
"""

from __future__ import annotations

import base64
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from mochi_pipeline_tests.loopback import LoopbackServer, Reply, Request


@dataclass
class Note:
    """A comment; with ``path`` a review comment / diff note, with ``review`` a GitHub review's summary."""

    author: str
    body: str
    created: str
    path: str = ""
    review: str = ""  # APPROVED, CHANGES_REQUESTED, COMMENTED
    bot: bool = False
    replies: list[Note] = field(default_factory=list)  # GitHub discussion replies


@dataclass
class Item:
    """One issue, pull/merge request or discussion, service-neutral; times are ISO-8601 UTC."""

    number: int
    title: str
    created: str
    updated: str
    kind: str = "issue"  # issue, pull (GitHub pull request / GitLab merge request), discussion
    author: str = "alice"
    bot: bool = False
    body: str = ""
    state: str = "open"  # open, closed, merged
    closed: str | None = None
    labels: list[str] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    merge_sha: str = ""
    squash_sha: str = ""
    head_sha: str = ""
    closing_commit: str = ""  # an issue closed by pushing this commit
    closed_by: list[int] = field(default_factory=list)  # pull/merge requests whose merge closed the issue
    answer: int | None = None  # discussion: index of the accepted answer in ``notes``


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _page(items: list, query: dict[str, str], default_per_page: int) -> tuple[list, int, int]:
    per_page = int(query.get("per_page") or default_per_page)
    page = int(query.get("page") or 1)
    last = max(1, -(-len(items) // per_page))
    return items[(page - 1) * per_page : page * per_page], page, last


def _link(url: str, query: dict[str, str], page: int, last: int, first: bool = False) -> str:
    def at(n: int) -> str:
        return f"{url}?{urlencode({**query, 'page': n})}"

    links = []
    if page < last:
        links.append(f'<{at(page + 1)}>; rel="next"')
    if page > 1:
        links.append(f'<{at(page - 1)}>; rel="prev"')
    if first:
        links.append(f'<{at(1)}>; rel="first"')
    links.append(f'<{at(last)}>; rel="last"')
    return ", ".join(links)


class TrackerStandIn(LoopbackServer):
    """A service stand-in: token check, scripted failures, optional slowness."""

    def __init__(self, token: str, items: list[Item]) -> None:
        super().__init__()
        self.token = token
        self.items = items
        self.delay_s = 0.0
        self._script: list[tuple[str, Reply]] = []
        self._script_lock = threading.Lock()

    def fail_next(self, path_prefix: str, *replies: Reply) -> None:
        """Answer the next requests whose path starts with ``path_prefix`` with ``replies``, in order."""
        with self._script_lock:
            self._script += [(path_prefix, reply) for reply in replies]

    def item(self, number: int, kind: str = "issue") -> Item:
        return next(i for i in self.items if i.number == number and i.kind == kind)

    def handle(self, request: Request) -> Reply:
        with self._script_lock:
            for index, (prefix, reply) in enumerate(self._script):
                if request.path.startswith(prefix):
                    del self._script[index]
                    return reply
        reply = self.serve(request) if self.authorized(request.headers) else self.unauthorized()
        reply.delay_s = self.delay_s
        return reply

    def authorized(self, headers: dict[str, str]) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    def unauthorized(self) -> Reply:  # pragma: no cover - overridden
        raise NotImplementedError

    def serve(self, request: Request) -> Reply:  # pragma: no cover - overridden
        raise NotImplementedError


# --- GitHub ----------------------------------------------------------------------------------


class GitHubStandIn(TrackerStandIn):
    """GitHub Enterprise's layout: REST under /api/v3, GraphQL at /api/graphql, web pages at the root."""

    def __init__(self, token: str, items: list[Item], repo: str = "octo/widgets") -> None:
        super().__init__(token, items)
        self.repo = repo

    @property
    def api(self) -> str:
        return f"{self.url}/api/v3"

    def authorized(self, headers: dict[str, str]) -> bool:
        return headers.get("authorization") in (f"token {self.token}", f"Bearer {self.token}")

    def unauthorized(self) -> Reply:
        return Reply(401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest",
                           "status": "401"})

    @staticmethod
    def rate_limited(retry_after: str = "1") -> Reply:
        return Reply(429, {"message": "You have exceeded a secondary rate limit. Please wait a few minutes before "
                                      "you try again.", "documentation_url": "https://docs.github.com/rest"},
                     {"Retry-After": retry_after})

    @staticmethod
    def primary_rate_limit(reset_in_s: int) -> Reply:
        reset = int(datetime.now(UTC).timestamp()) + reset_in_s
        return Reply(403, {"message": "API rate limit exceeded for user ID 1.",
                           "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"},
                     {"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)})

    @staticmethod
    def server_error(status: int = 502) -> Reply:
        return Reply(status, {"message": "Server Error"})

    def serve(self, request: Request) -> Reply:
        if request.method == "POST" and request.path == "/api/graphql":
            return self._graphql(request)
        base = f"/api/v3/repos/{self.repo}"
        path, q = request.path, request.query
        if path == base:
            return Reply(body=self.repo_json())
        if path == f"{base}/issues":
            items = [i for i in self.items if i.kind != "discussion"]
            if q.get("since"):
                items = [i for i in items if _time(i.updated) >= _time(q["since"])]
            reverse = q.get("direction", "desc") == "desc"
            items.sort(key=lambda i: (i.updated, i.number) if q.get("sort") == "updated" else (i.created, i.number),
                       reverse=reverse)
            return self._listed(request, [self.issue_json(i) for i in items])
        m = re.fullmatch(rf"{re.escape(base)}/(issues|pulls)/(\d+)(/\w+)?", path)
        if not m:
            return Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
        section, number, tail = m.group(1), int(m.group(2)), m.group(3) or ""
        kind = "pull" if section == "pulls" else None
        item = next((i for i in self.items if i.number == number and i.kind != "discussion"
                     and (kind is None or i.kind == kind)), None)
        if item is None:
            return Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})
        if section == "issues" and tail == "/comments":
            notes = [n for n in item.notes if not n.path and not n.review]
            return self._listed(request, [self.comment_json(item, k, n) for k, n in enumerate(notes)])
        if section == "issues" and tail == "/timeline":
            return self._listed(request, self.timeline_json(item))
        if section == "pulls" and tail == "":
            return Reply(body=self.pull_json(item))
        if section == "pulls" and tail == "/comments":
            notes = [n for n in item.notes if n.path]
            return self._listed(request, [self.review_comment_json(item, k, n) for k, n in enumerate(notes)])
        if section == "pulls" and tail == "/reviews":
            notes = [n for n in item.notes if n.review]
            return self._listed(request, [self.review_json(item, k, n) for k, n in enumerate(notes)])
        if section == "issues" and tail == "":
            return Reply(body=self.issue_json(item))
        return Reply(404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest"})

    def _listed(self, request: Request, rows: list) -> Reply:
        chunk, page, last = _page(rows, request.query, 30)
        return Reply(body=chunk, headers={"Link": _link(f"{self.url}{request.path}", request.query, page, last)})

    # recorded shapes

    def user_json(self, login: str, bot: bool = False) -> dict:
        return {
            "login": login, "id": 1000 + sum(map(ord, login)), "node_id": f"U_{login}",
            "avatar_url": f"{self.url}/avatars/{login}", "gravatar_id": "", "url": f"{self.api}/users/{login}",
            "html_url": f"{self.url}/{login}", "type": "Bot" if bot else "User", "user_view_type": "public",
            "site_admin": False,
        }

    def repo_json(self) -> dict:
        owner, name = self.repo.split("/")
        return {
            "id": 4242, "node_id": "R_4242", "name": name, "full_name": self.repo, "private": False,
            "owner": self.user_json(owner), "html_url": f"{self.url}/{self.repo}", "description": "Widgets",
            "fork": False, "url": f"{self.api}/repos/{self.repo}", "default_branch": "main", "has_issues": True,
            "has_discussions": True, "archived": False, "disabled": False, "visibility": "public",
        }

    def issue_json(self, item: Item) -> dict:
        api = f"{self.api}/repos/{self.repo}/issues/{item.number}"
        web = f"{self.url}/{self.repo}/{'pull' if item.kind == 'pull' else 'issues'}/{item.number}"
        out = {
            "url": api, "repository_url": f"{self.api}/repos/{self.repo}",
            "labels_url": f"{api}/labels{{/name}}", "comments_url": f"{api}/comments", "events_url": f"{api}/events",
            "html_url": web, "id": 50000 + item.number, "node_id": f"I_{item.number}", "number": item.number,
            "title": item.title, "user": self.user_json(item.author, item.bot),
            "labels": [
                {"id": 700 + k, "node_id": f"LA_{k}", "url": f"{self.api}/repos/{self.repo}/labels/{quote(name)}",
                 "name": name, "color": "ededed", "default": False, "description": None}
                for k, name in enumerate(item.labels)
            ],
            "state": "open" if item.state == "open" else "closed", "locked": False, "assignee": None,
            "assignees": [], "milestone": None,
            "comments": sum(1 for n in item.notes if not n.path and not n.review),
            "created_at": item.created, "updated_at": item.updated, "closed_at": item.closed,
            "author_association": "CONTRIBUTOR", "active_lock_reason": None, "body": item.body or None,
            "closed_by": None, "timeline_url": f"{api}/timeline", "performed_via_github_app": None,
            "state_reason": "completed" if item.state != "open" else None,
        }
        if item.kind == "pull":
            pulls = f"{self.api}/repos/{self.repo}/pulls/{item.number}"
            out["draft"] = False
            out["pull_request"] = {
                "url": pulls, "html_url": web, "diff_url": f"{web}.diff", "patch_url": f"{web}.patch",
                "merged_at": item.closed if item.state == "merged" else None,
            }
        return out

    def comment_json(self, item: Item, k: int, note: Note) -> dict:
        cid = item.number * 100 + k
        return {
            "url": f"{self.api}/repos/{self.repo}/issues/comments/{cid}",
            "html_url": f"{self.url}/{self.repo}/issues/{item.number}#issuecomment-{cid}",
            "issue_url": f"{self.api}/repos/{self.repo}/issues/{item.number}", "id": cid, "node_id": f"IC_{cid}",
            "user": self.user_json(note.author, note.bot), "created_at": note.created, "updated_at": note.created,
            "author_association": "CONTRIBUTOR", "body": note.body, "performed_via_github_app": None,
        }

    def pull_json(self, item: Item) -> dict:
        merged = item.state == "merged"
        api = f"{self.api}/repos/{self.repo}/pulls/{item.number}"
        head = {"label": f"{item.author}:topic-{item.number}", "ref": f"topic-{item.number}",
                "sha": item.head_sha or "d" * 40, "user": self.user_json(item.author, item.bot), "repo": None}
        return {
            "url": api, "id": 60000 + item.number, "node_id": f"PR_{item.number}",
            "html_url": f"{self.url}/{self.repo}/pull/{item.number}", "number": item.number,
            "state": "open" if item.state == "open" else "closed", "locked": False, "title": item.title,
            "user": self.user_json(item.author, item.bot), "body": item.body or None,
            "labels": self.issue_json(item)["labels"], "created_at": item.created, "updated_at": item.updated,
            "closed_at": item.closed, "merged_at": item.closed if merged else None,
            # GitHub reports a test-merge commit for open pull requests too: only a merged one's counts.
            "merge_commit_sha": item.merge_sha or "e" * 40, "assignee": None, "assignees": [],
            "requested_reviewers": [], "head": head, "base": {**head, "ref": "main", "label": "octo:main"},
            "draft": False, "merged": merged, "mergeable": None, "merged_by": self.user_json("maintainer") if merged
            else None, "comments": 0, "review_comments": sum(1 for n in item.notes if n.path), "commits": 1,
            "additions": 3, "deletions": 1, "changed_files": 1, "author_association": "CONTRIBUTOR",
            "auto_merge": None, "active_lock_reason": None,
        }

    def review_comment_json(self, item: Item, k: int, note: Note) -> dict:
        cid = item.number * 1000 + k
        return {
            "url": f"{self.api}/repos/{self.repo}/pulls/comments/{cid}", "pull_request_review_id": 90000 + k,
            "id": cid, "node_id": f"PRRC_{cid}", "diff_hunk": "@@ -1,3 +1,4 @@", "path": note.path, "position": 2,
            "original_position": 2, "commit_id": item.head_sha or "d" * 40, "original_commit_id": "d" * 40,
            "user": self.user_json(note.author, note.bot), "body": note.body, "created_at": note.created,
            "updated_at": note.created,
            "html_url": f"{self.url}/{self.repo}/pull/{item.number}#discussion_r{cid}",
            "pull_request_url": f"{self.api}/repos/{self.repo}/pulls/{item.number}", "author_association": "MEMBER",
            "start_line": None, "original_start_line": None, "line": 2, "original_line": 2, "side": "RIGHT",
            "subject_type": "line",
        }

    def review_json(self, item: Item, k: int, note: Note) -> dict:
        rid = 90000 + item.number * 10 + k
        return {
            "id": rid, "node_id": f"PRR_{rid}", "user": self.user_json(note.author, note.bot), "body": note.body,
            "state": note.review, "html_url": f"{self.url}/{self.repo}/pull/{item.number}#pullrequestreview-{rid}",
            "pull_request_url": f"{self.api}/repos/{self.repo}/pulls/{item.number}", "submitted_at": note.created,
            "commit_id": item.head_sha or "d" * 40, "author_association": "MEMBER",
        }

    def timeline_json(self, item: Item) -> list[dict]:
        """Labels, comments, cross-references from the closing pull requests, then the closed event."""
        def event(kind: str, at: str, **extra) -> dict:
            eid = 80000 + item.number * 10 + len(rows)
            return {"id": eid, "node_id": f"E_{eid}", "url": f"{self.api}/repos/{self.repo}/issues/events/{eid}",
                    "actor": self.user_json("maintainer"), "event": kind, "commit_id": None, "commit_url": None,
                    "created_at": at, "performed_via_github_app": None, **extra}

        rows: list[dict] = []
        for name in item.labels:
            rows.append(event("labeled", item.created, label={"name": name, "color": "ededed"}))
        for k, note in enumerate(n for n in item.notes if not n.path and not n.review):
            rows.append({**self.comment_json(item, k, note), "event": "commented",
                         "actor": self.user_json(note.author, note.bot)})
        closer_sha = item.closing_commit
        for number in item.closed_by:
            pull = self.item(number, "pull")
            closer_sha = closer_sha or pull.merge_sha
            source = {**self.issue_json(pull), "repository": self.repo_json()}
            rows.append({"actor": self.user_json(pull.author), "created_at": pull.created,
                         "updated_at": pull.created, "event": "cross-referenced",
                         "source": {"type": "issue", "issue": source}})
        # Another repository's merged pull request mentioning the issue does not close it.
        rows.append({"actor": self.user_json("stranger"), "created_at": item.created, "updated_at": item.created,
                     "event": "cross-referenced", "source": {"type": "issue", "issue": {
                         **self.issue_json(Item(99, "elsewhere", item.created, item.created, kind="pull",
                                                state="merged", closed=item.closed)),
                         "html_url": f"{self.url}/other/repo/pull/99"}}})
        if item.state != "open":
            sha = closer_sha or None
            rows.append(event("closed", item.closed, commit_id=sha, state_reason="completed",
                              commit_url=f"{self.api}/repos/{self.repo}/commits/{sha}" if sha else None))
        return rows

    def _graphql(self, request: Request) -> Reply:
        payload = json.loads(request.body)
        query, variables = payload["query"], payload.get("variables") or {}
        if "discussions(" in query:
            found = [i for i in self.items if i.kind == "discussion"]
            if variables.get("answered") is not None:
                found = [i for i in found if (i.answer is not None) == variables["answered"]]
            found.sort(key=lambda i: (i.updated, i.number), reverse=True)  # GitHub: UPDATED_AT DESC
            nodes, info = _connection(found, variables)
            return Reply(body={"data": {"repository": {"discussions": {
                "totalCount": len(found), "pageInfo": info, "nodes": [self.discussion_node(i) for i in nodes]}}}})
        if "node(id:" in query:
            item = self.item(int(variables["discussionId"].removeprefix("D_")), "discussion")
            nodes, info = _connection(list(enumerate(item.notes)), variables)
            return Reply(body={"data": {"node": {"comments": {
                "totalCount": len(item.notes), "pageInfo": info,
                "nodes": [self.discussion_comment_node(item, str(k), note) for k, note in nodes]}}}})
        return Reply(body={"errors": [{"message": "Unsupported query in the stand-in", "type": "INTERNAL"}]})

    def discussion_node(self, item: Item) -> dict:
        return {
            "id": f"D_{item.number}", "number": item.number, "title": item.title, "body": item.body,
            "createdAt": item.created, "updatedAt": item.updated,
            "author": {"login": item.author, "type": "Bot" if item.bot else "User"},
            "labels": {"nodes": [{"name": name} for name in item.labels]},
            "answer": {"id": f"DC_{item.number}_{item.answer}"} if item.answer is not None else None,
        }

    def discussion_comment_node(self, item: Item, key: str, note: Note) -> dict:
        node = {"id": f"DC_{item.number}_{key}", "body": note.body, "createdAt": note.created,
                "author": {"login": note.author, "type": "Bot" if note.bot else "User"}}
        if "_" not in key:
            node["replies"] = {"nodes": [self.discussion_comment_node(item, f"{key}_{j}", reply)
                                         for j, reply in enumerate(note.replies)]}
        return node


def _connection(rows: list, variables: dict) -> tuple[list, dict]:
    """GraphQL cursor pagination over ``rows``: cursors are positions."""
    start = int(variables["after"]) + 1 if variables.get("after") else 0
    first = variables.get("first") or len(rows)
    chunk = rows[start : start + first]
    end = start + len(chunk) - 1
    return chunk, {"startCursor": str(start) if chunk else None, "endCursor": str(end) if chunk else None,
                   "hasNextPage": end + 1 < len(rows), "hasPreviousPage": start > 0}


# --- GitLab ----------------------------------------------------------------------------------


class GitLabStandIn(TrackerStandIn):
    """GitLab REST v4 for one project; ``kind="pull"`` items are its merge requests (own iid sequence)."""

    def __init__(self, token: str, items: list[Item], project: str = "acme/tools/widgets", project_id: int = 42):
        super().__init__(token, items)
        self.project = project
        self.project_id = project_id

    def authorized(self, headers: dict[str, str]) -> bool:
        return headers.get("private-token") == self.token

    def unauthorized(self) -> Reply:
        return Reply(401, {"message": "401 Unauthorized"})

    @staticmethod
    def rate_limited(retry_after: str = "1") -> Reply:
        return Reply(429, "Retry later\n", {"Retry-After": retry_after, "RateLimit-Limit": "600",
                                            "RateLimit-Remaining": "0"})

    @staticmethod
    def server_error(status: int = 502) -> Reply:
        return Reply(status, {"message": "502 Bad Gateway"} if status == 502 else {"message": f"{status}"})

    def serve(self, request: Request) -> Reply:
        base = f"/api/v4/projects/{self.project_id}"
        by_path = f"/api/v4/projects/{quote(self.project, safe='')}"
        path = base + request.path.removeprefix(by_path) if request.path.startswith(by_path) else request.path
        if path == base:  # GitLab takes the numeric id or the URL-encoded path
            return Reply(body=self.project_json())
        for listing, kind in ((f"{base}/issues", "issue"), (f"{base}/merge_requests", "pull")):
            if path == listing:
                return self._list(request, kind)
        m = re.fullmatch(rf"{base}/(issues|merge_requests)/(\d+)/(notes|closed_by|resource_state_events)", path)
        if not m:
            return Reply(404, {"message": "404 Not found"})
        kind = "issue" if m.group(1) == "issues" else "pull"
        item = next((i for i in self.items if i.kind == kind and i.number == int(m.group(2))), None)
        if item is None:
            return Reply(404, {"message": "404 Not found"})
        if m.group(3) == "notes":
            return self._paged(request, self.notes_json(item))
        if m.group(3) == "closed_by":
            return self._paged(request, [self.mr_json(self.item(n, "pull")) for n in item.closed_by])
        return self._paged(request, self.state_events_json(item))

    def _list(self, request: Request, kind: str) -> Reply:
        q = request.query
        found = [i for i in self.items if i.kind == kind]
        if q.get("updated_after"):
            found = [i for i in found if _time(i.updated) >= _time(q["updated_after"])]
        order = "updated" if q.get("order_by") == "updated_at" else "created"
        found.sort(key=lambda i: (getattr(i, order), i.number), reverse=q.get("sort", "desc") == "desc")
        render = self.issue_json if kind == "issue" else self.mr_json
        return self._paged(request, [render(i) for i in found])

    def _paged(self, request: Request, rows: list) -> Reply:
        chunk, page, last = _page(rows, request.query, 20)
        headers = {
            "X-Page": str(page), "X-Per-Page": str(len(chunk) if page == last else request.query.get("per_page", 20)),
            "X-Total": str(len(rows)), "X-Total-Pages": str(last), "X-Next-Page": str(page + 1) if page < last else "",
            "X-Prev-Page": str(page - 1) if page > 1 else "",
            "Link": _link(f"{self.url}{request.path}", request.query, page, last, first=True),
        }
        return Reply(body=chunk, headers=headers)

    # recorded shapes

    def user_json(self, username: str) -> dict:
        uid = 100 + sum(map(ord, username))
        return {"id": uid, "username": username, "name": username.title(), "state": "active", "locked": False,
                "avatar_url": f"{self.url}/uploads/-/system/user/avatar/{uid}/avatar.png",
                "web_url": f"{self.url}/{username}"}

    def project_json(self) -> dict:
        return {"id": self.project_id, "description": "Widgets", "name": self.project.rsplit("/", 1)[-1],
                "path": self.project.rsplit("/", 1)[-1], "path_with_namespace": self.project,
                "default_branch": "main", "web_url": f"{self.url}/{self.project}", "visibility": "private",
                "issues_enabled": True, "merge_requests_enabled": True, "created_at": "2023-01-01T00:00:00.000Z"}

    def _common(self, item: Item, sigil: str) -> dict:
        state = {"open": "opened", "closed": "closed", "merged": "merged"}[item.state]
        return {
            "id": 9000 + item.number, "iid": item.number, "project_id": self.project_id, "title": item.title,
            "description": item.body or None, "state": state, "created_at": _gitlab_time(item.created),
            "updated_at": _gitlab_time(item.updated),
            "closed_at": _gitlab_time(item.closed) if item.state == "closed" else None,
            "closed_by": self.user_json("maintainer") if item.state == "closed" else None, "labels": item.labels,
            "milestone": None, "author": self.user_json(item.author), "assignees": [], "assignee": None,
            "user_notes_count": sum(1 for _ in item.notes), "upvotes": 0, "downvotes": 0,
            "discussion_locked": None, "references": {"short": f"{sigil}{item.number}",
                                                      "relative": f"{sigil}{item.number}",
                                                      "full": f"{self.project}{sigil}{item.number}"},
            "time_stats": {"time_estimate": 0, "total_time_spent": 0, "human_time_estimate": None,
                           "human_total_time_spent": None},
            "task_completion_status": {"count": 0, "completed_count": 0},
        }

    def issue_json(self, item: Item) -> dict:
        return {
            **self._common(item, "#"), "type": "ISSUE", "issue_type": "issue", "confidential": False,
            "due_date": None, "merge_requests_count": len(item.closed_by), "has_tasks": False,
            "web_url": f"{self.url}/{self.project}/-/issues/{item.number}", "severity": "UNKNOWN",
        }

    def mr_json(self, item: Item) -> dict:
        merged = item.state == "merged"
        return {
            **self._common(item, "!"), "merged_by": self.user_json("maintainer") if merged else None,
            "merge_user": self.user_json("maintainer") if merged else None,
            "merged_at": _gitlab_time(item.closed) if merged else None, "target_branch": "main",
            "source_branch": f"topic-{item.number}", "reviewers": [], "source_project_id": self.project_id,
            "target_project_id": self.project_id, "draft": False, "work_in_progress": False,
            "merge_when_pipeline_succeeds": False, "merge_status": "can_be_merged",
            "detailed_merge_status": "mergeable", "sha": item.head_sha or "d" * 40,
            "merge_commit_sha": item.merge_sha or None, "squash_commit_sha": item.squash_sha or None,
            "should_remove_source_branch": None, "force_remove_source_branch": True, "squash": bool(item.squash_sha),
            "squash_on_merge": bool(item.squash_sha), "reference": f"!{item.number}",
            "web_url": f"{self.url}/{self.project}/-/merge_requests/{item.number}", "has_conflicts": False,
            "blocking_discussions_resolved": True, "prepared_at": _gitlab_time(item.created),
        }

    def notes_json(self, item: Item) -> list[dict]:
        """The item's comments plus the system notes GitLab writes for label changes (to be skipped)."""
        noteable = "Issue" if item.kind == "issue" else "MergeRequest"
        rows = [{
            "id": 1, "type": None, "body": f"added ~{name} label", "attachment": None,
            "author": self.user_json("maintainer"), "created_at": _gitlab_time(item.created),
            "updated_at": _gitlab_time(item.created), "system": True, "noteable_id": 9000 + item.number,
            "noteable_type": noteable, "project_id": self.project_id, "resolvable": False, "confidential": False,
            "internal": False, "noteable_iid": item.number, "commands_changes": {},
        } for name in item.labels]
        for k, note in enumerate(item.notes):
            row = {"id": 500 + k, "type": "DiffNote" if note.path else None,
                   "body": note.body, "author": self.user_json(note.author),
                   "created_at": _gitlab_time(note.created), "updated_at": _gitlab_time(note.created),
                   "system": False, "noteable_id": 9000 + item.number, "noteable_type": noteable,
                   "project_id": self.project_id, "resolvable": bool(note.path), "confidential": False,
                   "internal": False, "noteable_iid": item.number, "commands_changes": {}, "attachment": None}
            if note.path:
                row["position"] = {"base_sha": "b" * 40, "start_sha": "b" * 40, "head_sha": "d" * 40,
                                   "old_path": note.path, "new_path": note.path, "position_type": "text",
                                   "old_line": None, "new_line": 3, "line_range": None}
            rows.append(row)
        return sorted(rows, key=lambda r: r["created_at"])

    def state_events_json(self, item: Item) -> list[dict]:
        if item.state == "open":
            return []
        closing_mr = self.item(item.closed_by[0], "pull") if item.closed_by else None
        return [{
            "id": 7000 + item.number, "user": self.user_json("maintainer"), "created_at": _gitlab_time(item.closed),
            "resource_type": "Issue", "resource_id": 9000 + item.number, "state": "closed",
            "source_commit": item.closing_commit or None,
            "source_merge_request": self.mr_json(closing_mr) if closing_mr else None,
        }]


def _gitlab_time(value: str | None) -> str | None:
    return _time(value).strftime("%Y-%m-%dT%H:%M:%S.000Z") if value else None


# --- Jira ------------------------------------------------------------------------------------

_JQL = re.compile(r'project = "(\w+)"(?: AND updated >= "(\d{4}/\d\d/\d\d \d\d:\d\d)")? ORDER BY updated (ASC|DESC)')
_JIRA_SYSTEM_FIELDS = ("summary", "description", "status", "labels", "created", "updated", "resolutiondate",
                       "reporter", "creator", "comment", "issuetype")


class JiraStandIn(TrackerStandIn):
    """Jira REST v2: Server/Data Center (PAT bearer, offset search) or Cloud (email + API token, search/jql).

    Times go out in the server's zone (``+0200``); JQL times are read in the user's zone (``user_zone``).
    The search embeds only ``inline_comments`` comments per issue, as Jira does; the rest are paged.
    """

    def __init__(self, token: str, items: list[Item], project: str = "MOCHI", *, email: str = "",
                 cloud: bool = False, user_zone: str = "Asia/Tokyo", inline_comments: int = 2) -> None:
        super().__init__(token, items)
        self.project = project
        self.email = email
        self.cloud = cloud
        self.user_zone = user_zone
        self.inline_comments = inline_comments
        self.server_zone = timezone(timedelta(hours=2))

    def authorized(self, headers: dict[str, str]) -> bool:
        if self.email:
            expected = base64.b64encode(f"{self.email}:{self.token}".encode()).decode()
            return headers.get("authorization") == f"Basic {expected}"
        return headers.get("authorization") == f"Bearer {self.token}"

    def unauthorized(self) -> Reply:
        return Reply(401, {"errorMessages": ["You are not authenticated. Authentication required to perform "
                                             "this operation."], "errors": {}},
                     {"X-Seraph-LoginReason": "AUTHENTICATED_FAILED", "WWW-Authenticate": "OAuth realm=\"jira\""})

    @staticmethod
    def rate_limited(retry_after: str = "1") -> Reply:
        return Reply(429, {"errorMessages": ["Rate limit exceeded."], "errors": {}}, {"Retry-After": retry_after})

    @staticmethod
    def server_error(status: int = 503) -> Reply:
        headers = {"Retry-After": "1"} if status == 503 else {}
        return Reply(status, {"errorMessages": ["Service unavailable."], "errors": {}}, headers)

    def serve(self, request: Request) -> Reply:
        path = request.path
        if path == "/rest/api/2/serverInfo":
            return Reply(body=self.server_info_json())
        if path == "/rest/api/2/field":
            return Reply(body=[{"id": f, "key": f, "name": f.title(), "custom": False, "orderable": True,
                                "navigable": True, "searchable": True, "clauseNames": [f]}
                               for f in _JIRA_SYSTEM_FIELDS])
        if path == "/rest/api/2/myself":
            return Reply(body={**self.user_json("searcher"), "timeZone": self.user_zone, "locale": "en_US"})
        if path == "/rest/api/2/search" and not self.cloud:
            return self._search(request)
        if path == "/rest/api/2/search/jql" and self.cloud:
            return self._search(request)
        m = re.fullmatch(rf"/rest/api/2/issue/{self.project}-(\d+)/comment", path)
        if m:
            item = self.item(int(m.group(1)))
            start = int(request.query.get("startAt") or 0)
            size = int(request.query.get("maxResults") or 5000)
            notes = item.notes[start : start + size]
            return Reply(body={"startAt": start, "maxResults": size, "total": len(item.notes),
                               "comments": [self.comment_json(item, start + k, n) for k, n in enumerate(notes)]})
        return Reply(404, {"errorMessages": ["Null not found"], "errors": {}})

    def _search(self, request: Request) -> Reply:
        m = _JQL.fullmatch(request.query.get("jql", ""))
        if not m:
            return Reply(400, {"errorMessages": ["Error in the JQL Query."], "errors": {}})
        if m.group(1) != self.project:
            return Reply(400, {"errorMessages": [f"The value '{m.group(1)}' does not exist for the field 'project'."],
                               "errors": {}})
        found = [i for i in self.items if i.kind == "issue"]
        if m.group(2):
            local = datetime.strptime(m.group(2), "%Y/%m/%d %H:%M").replace(tzinfo=ZoneInfo(self.user_zone))
            found = [i for i in found if _time(i.updated) >= local]
        found.sort(key=lambda i: (i.updated, i.number), reverse=m.group(3) == "DESC")
        size = int(request.query.get("maxResults") or 50)
        if self.cloud:
            token = request.query.get("nextPageToken")
            start = int(base64.b64decode(token)) if token else 0
            chunk = found[start : start + size]
            body = {"issues": [self.issue_json(i) for i in chunk], "isLast": start + size >= len(found)}
            if not body["isLast"]:
                body["nextPageToken"] = base64.b64encode(str(start + size).encode()).decode()
            return Reply(body=body)
        start = int(request.query.get("startAt") or 0)
        chunk = found[start : start + size]
        return Reply(body={"expand": "names,schema", "startAt": start, "maxResults": size, "total": len(found),
                           "issues": [self.issue_json(i) for i in chunk]})

    # recorded shapes

    def jira_time(self, value: str | None) -> str | None:
        if not value:
            return None
        return _time(value).astimezone(self.server_zone).strftime("%Y-%m-%dT%H:%M:%S.000%z")

    def user_json(self, name: str, bot: bool = False) -> dict:
        if self.cloud:
            return {"self": f"{self.url}/rest/api/2/user?accountId=5b10{name}", "accountId": f"5b10{name}",
                    "displayName": name.title(), "active": True, "timeZone": self.user_zone,
                    "accountType": "app" if bot else "atlassian",
                    "avatarUrls": {"48x48": f"{self.url}/avatar/{name}"}}
        return {"self": f"{self.url}/rest/api/2/user?username={name}", "name": name, "key": f"JIRAUSER{len(name)}",
                "emailAddress": f"{name}@example.com", "displayName": name.title(), "active": True,
                "timeZone": "Europe/Berlin", "avatarUrls": {"48x48": f"{self.url}/avatar/{name}"}}

    def server_info_json(self) -> dict:
        if self.cloud:
            return {"baseUrl": self.url, "version": "1001.0.0-SNAPSHOT", "versionNumbers": [1001, 0, 0],
                    "deploymentType": "Cloud", "buildNumber": 100282, "buildDate": "2025-01-01T00:00:00.000+0000",
                    "serverTime": "2025-01-02T00:00:00.000+0000", "scmInfo": "abc", "serverTitle": "Jira",
                    "defaultLocale": {"locale": "en_US"}}
        return {"baseUrl": self.url, "version": "9.12.2", "versionNumbers": [9, 12, 2], "deploymentType": "Server",
                "buildNumber": 9120002, "buildDate": "2024-01-01T00:00:00.000+0200",
                "serverTime": "2025-01-02T00:00:00.000+0200", "scmInfo": "abc", "serverTitle": "Jira"}

    def comment_json(self, item: Item, k: int, note: Note) -> dict:
        cid = str(10000 + item.number * 100 + k)
        key = f"{self.project}-{item.number}"
        return {"self": f"{self.url}/rest/api/2/issue/{key}/comment/{cid}", "id": cid,
                "author": self.user_json(note.author, note.bot), "body": note.body,
                "updateAuthor": self.user_json(note.author, note.bot), "created": self.jira_time(note.created),
                "updated": self.jira_time(note.created)}

    def issue_json(self, item: Item) -> dict:
        done = item.state != "open"
        key = f"{self.project}-{item.number}"
        category = ({"id": 3, "key": "done", "colorName": "green", "name": "Done"} if done
                    else {"id": 2, "key": "new", "colorName": "blue-gray", "name": "To Do"})
        inline = item.notes[: self.inline_comments]
        return {
            "expand": "operations,versionedRepresentations,editmeta,changelog,renderedFields",
            "id": str(10000 + item.number), "self": f"{self.url}/rest/api/2/issue/{10000 + item.number}", "key": key,
            "fields": {
                "summary": item.title, "description": item.body or None,
                "status": {"self": f"{self.url}/rest/api/2/status/{category['id']}", "description": "",
                           "iconUrl": f"{self.url}/images/icons/statuses/generic.png",
                           "name": "Done" if done else "Open", "id": str(category["id"]),
                           "statusCategory": {"self": f"{self.url}/rest/api/2/statuscategory/{category['id']}",
                                              **category}},
                "labels": item.labels, "created": self.jira_time(item.created),
                "updated": self.jira_time(item.updated),
                "resolutiondate": self.jira_time(item.closed) if done else None,
                "reporter": self.user_json(item.author, item.bot), "creator": self.user_json(item.author, item.bot),
                "comment": {"comments": [self.comment_json(item, k, n) for k, n in enumerate(inline)],
                            "maxResults": len(inline), "total": len(item.notes), "startAt": 0},
            },
        }
