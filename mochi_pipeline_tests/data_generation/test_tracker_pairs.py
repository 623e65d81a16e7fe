"""Tracker and CI examples: issue -> closing change, merged request -> its change, accepted answer, CI fix."""

from __future__ import annotations

import random

import pytest

from mochi_pipeline.data_generation.settings import TrackerPairSettings
from mochi_pipeline.data_generation.tracker_pairs import (
    ci_fix_pairs,
    discussion_qa_pairs,
    issue_resolution_pairs,
)
from mochi_pipeline.preprocessing.settings import ScrubSettings, ThreadCleaningSettings
from mochi_pipeline.preprocessing.thread_cleaning import clean_ci_failures, clean_issue_threads
from mochi_pipeline.records import CIFailure, Commit, FileDiff, IssueThread, ThreadComment
from mochi_pipeline_tests.planted_secrets import values

SETTINGS = TrackerPairSettings()
FIX_DIFF = ("diff --git a/pkg/util.py b/pkg/util.py\nindex 1..2 100644\n--- a/pkg/util.py\n+++ b/pkg/util.py\n"
            "@@ -1,2 +1,4 @@\n def clamp(value, low, high):\n+    if low > high:\n"
            "+        raise ValueError(\"empty range\")\n     return max(low, min(high, value))\n")


def make_commit(sha: str, message: str, diff: str = FIX_DIFF, path: str = "pkg/util.py", parents: int = 1,
                date: str = "2024-03-05T10:00:00Z") -> Commit:
    return Commit(sha=sha, parents=["0" * 40] * parents, author_name="A", author_email="a@example.com", date=date,
                  message=message, files=[FileDiff(path=path, status="M", additions=2, deletions=0, diff=diff)])


FIX = make_commit("f" * 40, "Make clamp reject an empty range\n\nRaise ValueError instead of returning high.")
MERGE = make_commit("e" * 40, "Merge pull request #9 from alice-dev/empty-range\n\nReject empty ranges in clamp",
                    parents=2)
COMMITS = [FIX, MERGE]


def comment(body: str, day: int, author: str = "user_00000002", **kw) -> ThreadComment:
    return ThreadComment(author=author, body=body, created_at=f"2024-03-{day:02d}T10:00:00Z", **kw)


def issue(number: str = "7", closing: tuple[str, ...] = (), closed_by: tuple[str, ...] = (), state: str = "closed",
          kind: str = "issue", comments: tuple[ThreadComment, ...] = (), **kw) -> IssueThread:
    return IssueThread(tracker="github", project="acme/widgets", number=number, kind=kind,
                       title="clamp returns high for an empty range", body="clamp(5, 3, 1) returns 1, not an error.",
                       author="user_00000001", state=state, created_at="2024-03-01T10:00:00Z",
                       updated_at="2024-03-08T10:00:00Z", closed_at="2024-03-05T12:00:00Z" if state != "open" else "",
                       closing_commits=list(closing), closed_by=list(closed_by), comments=list(comments), **kw)


def test_issue_resolution_pair_holds_the_closing_commits_diff():
    thread = issue(closing=(FIX.sha,), comments=(comment("Reproduced on main.", 2),
                                                 comment("Fixed in f00d, thanks!", 6)))
    examples, skipped = issue_resolution_pairs([thread], COMMITS, SETTINGS)
    (ex,) = examples
    assert (ex.task, ex.generator, ex.commit, ex.path) == ("issue_resolution", "issue_pairs", FIX.sha,
                                                           "github:acme/widgets#7")
    assert ex.date == thread.closed_at and ex.language == "python"
    assert ex.context.startswith("Issue #7: clamp returns high for an empty range\n\nclamp(5, 3, 1)")
    assert "Reproduced on main." in ex.context and "Fixed in f00d" not in ex.context  # after the closing
    assert ex.response.startswith("Make clamp reject an empty range\n\nRaise ValueError")
    assert "--- pkg/util.py (M)" in ex.response and '+        raise ValueError("empty range")' in ex.response
    assert "index 1..2" not in ex.response and not skipped


def test_jira_issue_gets_the_commits_whose_messages_name_its_key():
    named = make_commit("a" * 40, "PROJ-12: make clamp reject an empty range")
    other = make_commit("b" * 40, "PROJ-120 and XPROJ-12 are other issues", date="2024-03-06T10:00:00Z")
    thread = issue(number="PROJ-12").model_copy(update={"tracker": "jira", "project": "PROJ"})
    (ex,), skipped = issue_resolution_pairs([thread], [named, other], SETTINGS)
    assert ex.commit == named.sha and ex.response.startswith("PROJ-12: make clamp") and not skipped
    _, skipped = issue_resolution_pairs([thread.model_copy(update={"number": "PROJ-7"})], [named, other], SETTINGS)
    assert skipped == {"no_closing_change": 1}


def test_issue_closed_by_a_pull_request_gets_its_merge_commit():
    pr = issue(number="9", kind="pull_request", state="merged", closing=(MERGE.sha,),
               comments=(comment("Please add a test.", 3, kind="review_comment", path="pkg/util.py"),))
    examples, skipped = issue_resolution_pairs([issue(closed_by=("9",)), pr], COMMITS, SETTINGS)
    by_task = {e.task: e for e in examples}
    assert set(by_task) == {"issue_resolution", "pr_change"} and not skipped
    for ex in examples:
        assert ex.commit == MERGE.sha and "raise ValueError" in ex.response
        assert ex.response.startswith("Reject empty ranges in clamp") and "alice-dev" not in ex.response
    assert by_task["pr_change"].context.startswith("Pull request #9:")
    assert "--- review comment on pkg/util.py ---\nPlease add a test." in by_task["pr_change"].context
    off, skipped = issue_resolution_pairs([pr], COMMITS, TrackerPairSettings(pr_changes=False))
    assert off == [] and skipped == {"pr_changes_off": 1}


@pytest.mark.parametrize(("thread", "reason"), [
    (issue(closing=("1" * 40,)), "commit_unknown"),
    (issue(), "no_closing_change"),
    (issue(closed_by=("42",)), "pr_unknown"),
    (issue(state="open"), "open"),
    (issue(kind="pull_request", state="closed", closing=(FIX.sha,)), "not_merged"),
    (issue(closing=(FIX.sha[:7], MERGE.sha)), None),  # an abbreviated SHA is found
])
def test_skipped_threads_are_counted(thread, reason):
    examples, skipped = issue_resolution_pairs([thread], COMMITS, SETTINGS)
    if reason is None:
        assert len(examples) == 1 and not skipped
    else:
        assert examples == [] and skipped == {reason: 1}


def test_diff_and_thread_are_cut_to_their_budgets():
    big = make_commit("c" * 40, "Rewrite the parser", diff="@@ -1,1 +1,900 @@\n" + "+x = 1\n" * 900)
    many = tuple(comment(f"Comment {n}: " + "detail " * 60, 2) for n in range(20))
    settings = TrackerPairSettings(max_diff_chars=1000, max_thread_chars=2000)
    (ex,), _ = issue_resolution_pairs([issue(closing=(big.sha,), comments=many)], [big], settings)
    assert len(ex.response) < 1200 and "more characters of this file's diff" in ex.response
    assert len(ex.context) < 2100 and "more comments]" in ex.context


def test_accepted_answer_becomes_qa():
    answer = "Pass strict=False to clamp; it then swaps low and high instead of raising."
    threads = [issue(comments=(comment("Did you try the nightly?", 2), comment(answer, 3, accepted=True))),
               issue(number="8", comments=(comment("Yes.", 3, accepted=True),)),
               issue(number="9")]
    examples, skipped = discussion_qa_pairs(threads, SETTINGS)
    (ex,) = examples
    assert ex.instruction == "clamp returns high for an empty range\n\nclamp(5, 3, 1) returns 1, not an error."
    assert ex.response == answer and (ex.task, ex.generator) == ("discussion_qa", "issue_pairs")
    assert ex.path == "github:acme/widgets#7" and ex.date == "2024-03-05T12:00:00Z" and ex.commit == ""
    assert skipped == {"short_answer": 1, "no_accepted_answer": 1}


def failure(job_id: str, fixed_by: str, excerpt: str = "E   ValueError: empty range\nFAILED test_util.py::test_clamp",
            commit: str = "d" * 40, job: str = "test (3.12)") -> CIFailure:
    return CIFailure(system="github_actions", project="acme/widgets", pipeline="CI", job=job, job_id=job_id,
                     commit=commit, failed_at=f"2024-03-04T10:00:0{job_id}Z", excerpt=excerpt, fixed_by=fixed_by)


def test_ci_fix_pair_holds_the_fixed_by_diff():
    examples, skipped = ci_fix_pairs([failure("1", FIX.sha)], COMMITS, SETTINGS)
    (ex,) = examples
    assert (ex.task, ex.generator, ex.commit, ex.date) == ("ci_fix", "ci_fix_pairs", FIX.sha, "2024-03-04T10:00:01Z")
    assert ex.context.startswith("Job: test (3.12) (pipeline: CI)\n\nE   ValueError: empty range")
    assert ex.response.startswith("Make clamp reject") and 'raise ValueError("empty range")' in ex.response
    assert ex.path == "github_actions:acme/widgets/test (3.12)/1" and not skipped


def test_ci_failures_without_a_usable_fix_are_counted():
    failures = [failure("1", ""), failure("2", "1" * 40), failure("3", "d" * 40), failure("4", FIX.sha),
                failure("5", FIX.sha, job="test (3.11)"),  # the same log in another matrix job
                failure("6", FIX.sha, excerpt="E   TypeError: clamp() missing 1 required argument")]
    examples, skipped = ci_fix_pairs(failures, COMMITS, SETTINGS)
    assert len(examples) == 2
    assert skipped == {"no_fix": 1, "commit_unknown": 1, "flaky": 1, "duplicate": 1}


def test_long_logs_keep_their_end():
    log = "\n".join(f"collecting module {n}" for n in range(500)) + "\nE   AssertionError: the error"
    (ex,), _ = ci_fix_pairs([failure("1", FIX.sha, excerpt=log)], COMMITS, TrackerPairSettings(max_log_chars=300))
    assert ex.context.endswith("E   AssertionError: the error") and "more characters]" in ex.context
    assert len(ex.context) < 400


def test_cleaned_threads_and_logs_leak_nothing_into_examples():
    token, email = (values(random.Random(k))[k] for k in ("github_token", "email"))
    raw = issue(closing=(FIX.sha,), comments=(
        ThreadComment(author="bob42", body=f"@alice-dev my token {token} and mail {email} reproduce it.",
                      created_at="2024-03-02T10:00:00Z"),)).model_copy(update={"author": "alice-dev"})
    threads, _ = clean_issue_threads([raw], ThreadCleaningSettings(min_chars=20), ScrubSettings())
    failures, _ = clean_ci_failures([failure("1", FIX.sha, excerpt=f"login with {token}\nE   boom")], ScrubSettings())
    examples = issue_resolution_pairs(threads, COMMITS, SETTINGS)[0] + ci_fix_pairs(failures, COMMITS, SETTINGS)[0]
    assert len(examples) == 2
    for ex in examples:
        text = ex.model_dump_json()
        assert token not in text and email not in text and "alice-dev" not in text and "bob42" not in text
