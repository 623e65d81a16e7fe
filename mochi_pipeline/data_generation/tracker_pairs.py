"""Examples from the issue tracker and CI: problem -> the change that solved it, question -> accepted answer.

- ``issue_resolution``: a closed issue (title, body, discussion up to its closing) -> the commit(s)
  that closed it: its ``closing_commits``, or the merge commits of the pull/merge requests in
  ``closed_by``. Response: each commit's message, then its diff (cut per file to ``max_diff_chars``).
- ``pr_change``: a merged pull/merge request (description and review discussion) -> its merge or
  squash commit's change, in the same form (``pr_changes`` turns these off). An issue closed by a
  request gives both: two descriptions of one change.
- ``discussion_qa``: a thread with an accepted answer: title and body -> that answer.
- ``ci_fix``: a failed CI job (job, pipeline, log excerpt) -> the ``fixed_by`` commit's change.

A commit must be in ``commits`` (the cleaned history) to be used; what is skipped is counted by reason.
Every example carries its commit (the time split holds it out together with that commit's other
examples) and the thread's ``closed_at`` (else ``updated_at``) or the failure's time as its date;
``path`` names the source thread or job (``github:owner/name#12``, ``github_actions:owner/name/job/123``).
Merge commits' "Merge pull request #12 from owner/branch" subjects are replaced by the request's title
(they name the fork's owner and say nothing about the change).
"""

from __future__ import annotations

import re
from collections import Counter

from mochi_pipeline.data_generation.commit_pairs import combined_diff, language_of
from mochi_pipeline.data_generation.settings import TrackerPairSettings
from mochi_pipeline.records import CIFailure, Commit, FileDiff, IssueThread, ThreadComment, TrainingExample

PAIRS_VERSION = "2"  # bump when the examples built from the same input change
ISSUE_GENERATOR = "issue_pairs"
CI_GENERATOR = "ci_fix_pairs"
REQUEST_KINDS = ("pull_request", "merge_request")
_ISSUE_KEY = re.compile(r"\b[A-Z][A-Z0-9_]+-[1-9]\d*\b")  # PROJ-123, as commit messages name Jira issues
_KIND_NAMES = {"issue": "Issue", "pull_request": "Pull request", "merge_request": "Merge request"}
_MERGE_SUBJECT = re.compile(r"^(?:Merge (?:pull request|branch|remote-tracking branch)\b|Merged in\b)", re.I)
_MERGE_TRAILER = re.compile(r"^(?:See merge request\b|Reviewed-on:|Approved-by:)", re.I)

ISSUE_INSTRUCTION = "Write the change that resolves this issue: a commit message, then the diff."
PR_INSTRUCTION = "Write the change this pull request describes: a commit message, then the diff."
CI_INSTRUCTION = "This CI job failed with the log below. Write the change that fixes it: a commit message, then the " \
    "diff."


def thread_ref(thread: IssueThread) -> str:
    """Where an example came from: ``tracker:project#number`` (Jira: ``jira:PROJ-12``)."""
    return f"{thread.tracker}:{thread.number}" if "-" in thread.number else \
        f"{thread.tracker}:{thread.project}#{thread.number}"


def thread_date(thread: IssueThread) -> str:
    return thread.closed_at or thread.updated_at or thread.created_at


def _cut(text: str, budget: int, keep_end: bool = False) -> str:
    if len(text) <= budget:
        return text
    more = f"[... {len(text) - budget} more characters]"
    if keep_end:  # a log: the error is at its end
        rest = text[-budget:]
        return more + "\n" + (rest.split("\n", 1)[1] if "\n" in rest else rest)
    return text[:budget].rsplit("\n", 1)[0] + "\n" + more


def _comment_header(comment: ThreadComment, thread: IssueThread) -> str:
    who = " by the author" if comment.author and comment.author == thread.author else ""
    if comment.kind == "review_comment":
        return f"--- review comment{who}" + (f" on {comment.path}" if comment.path else "") + " ---"
    return f"--- {'review' if comment.kind == 'review' else 'comment'}{who} ---"


def thread_text(thread: IssueThread, comments: list[ThreadComment], budget: int) -> str:
    """Title, body and ``comments`` in order within ``budget`` characters; the body is cut to leave room for at
    least half of it, comments that no longer fit are counted at the end."""
    number = f"#{thread.number}" if thread.number.isdigit() else thread.number
    head = f"{_KIND_NAMES.get(thread.kind, thread.kind.replace('_', ' ').capitalize())} {number}: {thread.title}"
    body = thread.body.strip()
    text = head + ("\n\n" + _cut(body, max(100, budget // 2)) if body else "")
    for n, c in enumerate(comments):
        part = f"\n\n{_comment_header(c, thread)}\n{c.body.strip()}"
        if len(text) + len(part) > budget:
            text += f"\n\n[... {len(comments) - n} more comments]"
            break
        text += part
    return text


def _message(commit: Commit, title: str) -> str:
    """A commit's message; a merge commit's 'Merge ... from owner/branch' subject replaced by what it merged."""
    message = commit.message.strip()
    lines = message.split("\n")
    if not _MERGE_SUBJECT.match(lines[0]):
        return message
    rest = "\n".join(line for line in lines[1:] if not _MERGE_TRAILER.match(line.strip())).strip()
    return rest or title.strip() or message


def change_text(commits: list[Commit], budget: int, title: str = "") -> str:
    """Each commit's message then its diff (the budget shared by the commits, then by each commit's files)."""
    share = max(200, budget // max(1, len(commits)))
    return "\n\n".join(f"{_message(c, title)}\n\n{combined_diff(_changed([c]), share)}".rstrip() for c in commits)


class _Commits:
    """Commits by SHA (an abbreviated SHA of 7+ characters finds its commit when unambiguous), and by the Jira
    issue keys their messages name: Jira links a commit to an issue that way, not by a closing event."""

    def __init__(self, commits: list[Commit]) -> None:
        self.by_sha = {c.sha: c for c in commits}
        self.by_prefix: dict[str, list[Commit]] = {}
        self.by_issue_key: dict[str, list[Commit]] = {}
        for c in commits:
            self.by_prefix.setdefault(c.sha[:7], []).append(c)
            for key in set(_ISSUE_KEY.findall(c.message)):
                self.by_issue_key.setdefault(key, []).append(c)

    def get(self, sha: str) -> Commit | None:
        sha = sha.strip().lower()
        if sha in self.by_sha:
            return self.by_sha[sha]
        if len(sha) < 7:
            return None
        found = [c for c in self.by_prefix.get(sha[:7], []) if c.sha.startswith(sha)]
        return found[0] if len(found) == 1 else None


def _changed(commits: list[Commit]) -> list[FileDiff]:
    """The files of ``commits`` with a text diff (what ``combined_diff`` shows)."""
    return [f for c in commits for f in c.files if f.diff.strip() and "@@" in f.diff]


def _change_example(thread: IssueThread, commits: list[Commit], comments: list[ThreadComment], task: str,
                    instruction: str, settings: TrackerPairSettings) -> TrainingExample:
    files = _changed(commits)
    paths = sorted({f.path for f in files})
    return TrainingExample(
        instruction=instruction,
        context=thread_text(thread, comments, settings.max_thread_chars),
        response=change_text(commits, settings.max_diff_chars, thread.title),
        task=task,
        generator=ISSUE_GENERATOR,
        path=thread_ref(thread),
        commit=max(commits, key=lambda c: c.date).sha,
        language=language_of(paths[0]) if len(paths) == 1 else "",
        date=thread_date(thread) or max(c.date for c in commits),
    )


def issue_resolution_pairs(threads: list[IssueThread], commits: list[Commit],
                           settings: TrackerPairSettings) -> tuple[list[TrainingExample], Counter]:
    """Closed issues -> the change that closed them (task ``issue_resolution``), and merged requests -> their
    change (task ``pr_change``); what gives no example, counted by reason."""
    index = _Commits(commits)
    requests = {(t.tracker, t.project, t.number): t for t in threads if t.kind in REQUEST_KINDS}
    examples: list[TrainingExample] = []
    skipped: Counter = Counter()
    for thread in threads:
        request = thread.kind in REQUEST_KINDS
        if request and not settings.pr_changes:
            skipped["pr_changes_off"] += 1
            continue
        if request and thread.state != "merged":
            skipped["not_merged" if thread.state == "closed" else "open"] += 1
            continue
        if not request and thread.state != "closed":
            skipped["open"] += 1
            continue
        shas = list(thread.closing_commits)
        if thread.tracker == "jira" and not shas:
            shas = [c.sha for c in index.by_issue_key.get(thread.number, [])]
        linked = [requests.get((thread.tracker, thread.project, n.lstrip("#!"))) for n in thread.closed_by]
        for pr in linked:
            if pr is not None and pr.state == "merged":
                shas += pr.closing_commits
        if not shas:
            skipped["pr_unknown" if thread.closed_by and not any(linked) else "no_closing_change"] += 1
            continue
        found = list({c.sha: c for c in (index.get(s) for s in shas) if c is not None}.values())
        if not found:
            skipped["commit_unknown"] += 1
            continue
        if len(found) > settings.max_commits:
            skipped["too_many_commits"] += 1
            continue
        if not _changed(found):
            skipped["no_text_diff"] += 1
            continue
        found.sort(key=lambda c: c.date)
        # The discussion up to the closing: what came after ("fixed, thanks") is not part of the problem.
        comments = [c for c in thread.comments if not thread.closed_at or c.created_at <= thread.closed_at]
        if request:
            examples.append(_change_example(thread, found, comments, "pr_change", PR_INSTRUCTION, settings))
        else:
            examples.append(_change_example(thread, found, comments, "issue_resolution", ISSUE_INSTRUCTION,
                                            settings))
    return examples, skipped


def discussion_qa_pairs(threads: list[IssueThread],
                        settings: TrackerPairSettings) -> tuple[list[TrainingExample], Counter]:
    """Threads with an accepted answer -> question (title and body) and that answer (task ``discussion_qa``)."""
    examples: list[TrainingExample] = []
    skipped: Counter = Counter()
    for thread in threads:
        answers = [c for c in thread.comments if c.accepted]
        if not answers:
            skipped["no_accepted_answer"] += 1
            continue
        answer = answers[-1].body.strip()
        if len(answer) < settings.min_answer_chars:
            skipped["short_answer"] += 1
            continue
        question = thread.title.strip() + ("\n\n" + _cut(thread.body.strip(), settings.max_thread_chars)
                                           if thread.body.strip() else "")
        examples.append(TrainingExample(
            instruction=question,
            response=answer,
            task="discussion_qa",
            generator=ISSUE_GENERATOR,
            path=thread_ref(thread),
            date=thread_date(thread) or answers[-1].created_at,
        ))
    return examples, skipped


def failure_ref(failure: CIFailure) -> str:
    return f"{failure.system}:{failure.project}/{failure.job}/{failure.job_id}"


def ci_fix_pairs(failures: list[CIFailure], commits: list[Commit],
                 settings: TrackerPairSettings) -> tuple[list[TrainingExample], Counter]:
    """Failed CI jobs -> the change of the commit whose run of the job passed next (task ``ci_fix``). The same
    log fixed by the same commit (a job matrix failing alike) gives one example."""
    index = _Commits(commits)
    examples: list[TrainingExample] = []
    skipped: Counter = Counter()
    seen: set[tuple[str, str]] = set()
    for failure in sorted(failures, key=lambda f: (f.failed_at, f.job_id)):
        if not failure.fixed_by:
            skipped["no_fix"] += 1
            continue
        if failure.fixed_by == failure.commit:
            skipped["flaky"] += 1  # the same commit passed on a rerun: nothing was fixed
            continue
        fix = index.get(failure.fixed_by)
        if fix is None:
            skipped["commit_unknown"] += 1
            continue
        if not _changed([fix]):
            skipped["no_text_diff"] += 1
            continue
        excerpt = failure.excerpt.strip()
        key = (fix.sha, " ".join(excerpt.split()))
        if key in seen:
            skipped["duplicate"] += 1
            continue
        seen.add(key)
        header = f"Job: {failure.job}" + (f" (pipeline: {failure.pipeline})" if failure.pipeline else "")
        paths = sorted({f.path for f in _changed([fix])})
        examples.append(TrainingExample(
            instruction=CI_INSTRUCTION,
            context=f"{header}\n\n{_cut(excerpt, settings.max_log_chars, keep_end=True)}",
            response=change_text([fix], settings.max_diff_chars),
            task="ci_fix",
            generator=CI_GENERATOR,
            path=failure_ref(failure),
            commit=fix.sha,
            language=language_of(paths[0]) if len(paths) == 1 else "",
            date=failure.failed_at or fix.date,
        ))
    return examples, skipped
