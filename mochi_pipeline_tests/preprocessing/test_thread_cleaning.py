"""Issue threads and CI logs cleaned: bots out, trimmed, scrubbed with the real scrubber, pseudonymised."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from mochi_pipeline.preprocessing.settings import ScrubSettings, ThreadCleaningSettings
from mochi_pipeline.preprocessing.thread_cleaning import (
    clean_ci_failures,
    clean_issue_threads,
    is_bot,
    pseudonym,
    pseudonym_key,
    strip_template,
    trim_text,
)
from mochi_pipeline.records import CIFailure, IssueThread, ThreadComment
from mochi_pipeline_tests.planted_secrets import values

SETTINGS = ThreadCleaningSettings(min_chars=20)
SCRUB = ScrubSettings()
TEXT = "Calling clamp with an empty range crashes the parser with an IndexError in the tokenizer."


def comment(author: str, body: str, day: int = 2, **kw) -> ThreadComment:
    return ThreadComment(author=author, body=body, created_at=f"2024-03-{day:02d}T10:00:00Z", **kw)


def thread(*comments: ThreadComment, number: str = "1", body: str = TEXT, author: str = "alice-dev",
           title: str = "clamp crashes on an empty range", project: str = "acme/widgets", **kw) -> IssueThread:
    return IssueThread(tracker="github", project=project, number=number, kind="issue", title=title, body=body,
                       author=author, state="closed", created_at="2024-03-01T10:00:00Z", comments=list(comments), **kw)


def clean(*threads: IssueThread, settings: ThreadCleaningSettings = SETTINGS, secret: str = ""):
    return clean_issue_threads(list(threads), settings, SCRUB, secret)


@pytest.mark.parametrize("login", ["dependabot[bot]", "stale[bot]", "renovate", "renovate-bot", "codecov-commenter",
                                   "github-actions", "docs-bot", "Dependabot"])
def test_bot_comments_are_dropped_and_counted(login):
    out, stats = clean(thread(comment(login, "Bumps lodash from 4.17.20 to 4.17.21 in the npm group."),
                              comment("bob42", "I can reproduce this on the main branch today.", day=3)))
    assert [c.body for c in out[0].comments] == ["I can reproduce this on the main branch today."]
    assert stats.dropped_comments == {"bot": 1}


def test_flagged_bots_and_threads_opened_by_bots():
    flagged = comment("helper", "This issue has been automatically marked as stale.", author_is_bot=True)
    out, stats = clean(thread(flagged), thread(number="2", author="dependabot[bot]"),
                       thread(number="3", author="someone", author_is_bot=True))
    assert [t.number for t in out] == ["1"] and out[0].comments == []
    assert stats.dropped == {"bot_author": 2} and stats.dropped_comments == {"bot": 1}
    assert not is_bot("robot", SETTINGS) and not is_bot("bottle", SETTINGS)  # '[bot]' is literal, not a class
    assert is_bot("my-helper", ThreadCleaningSettings(bot_logins=["my-*"]))


def test_same_login_same_pseudonym_everywhere_and_the_login_never_appears():
    first = thread(comment("bob42", "@alice-dev I see it too, see /home/bob42/work/log.txt and thanks Alice-Dev"),
                   comment("alice-dev", "Thanks @bob42, and @carol-x (who never commented) knows the parser.", day=3),
                   title="clamp crashes (cc @bob42)")
    second = thread(comment("Alice-Dev", "Same root cause as the other one, reported by @BOB42."),
                    number="2", author="bob42")
    out, stats = clean(first, second)
    alice, bob = out[0].author, out[1].author
    assert alice.startswith("user_") and len(alice) == 13 and alice != bob
    assert [c.author for c in out[0].comments] == [bob, alice] and out[1].comments[0].author == alice
    assert f"@{alice} I see it too" in out[0].comments[0].body and f"@{bob}" in out[1].comments[0].body
    assert f"cc @{bob}" in out[0].title and f"thanks {alice}" in out[0].comments[0].body
    dumped = " ".join(t.model_dump_json() for t in out).lower()
    for login in ("alice-dev", "bob42", "carol-x"):
        assert login not in dumped
    assert stats.participants == 2 and stats.pseudonymised["mention"] == 5
    again, _ = clean(first, second)
    assert again == out  # stable across runs


def test_pseudonyms_are_keyed_by_project_and_secret():
    key = pseudonym_key("github", "acme/widgets")
    assert pseudonym("Alice", key) == pseudonym("alice", key) == pseudonym("alice", pseudonym_key("github",
                                                                                                  "acme/widgets"))
    others = {pseudonym("alice", pseudonym_key("github", "acme/other")),
              pseudonym("alice", pseudonym_key("github", "acme/widgets", secret="s3cret"))}
    assert pseudonym("alice", key) not in others and len(others) == 2
    out, _ = clean(thread(), secret="s3cret")
    assert out[0].author == pseudonym("alice-dev", pseudonym_key("github", "acme/widgets", "s3cret"))


def test_code_keeps_decorators_and_npm_scopes_but_not_participants():
    body = TEXT + "\n\n```python\n@property\ndef x(self):  # @alice-dev wrote this\n    pass\n```\n" \
        "Depends on @types/node and `@dataclass`; mail support@example.com."
    out, _ = clean(thread(body=body))
    text = out[0].body
    assert "@property" in text and "@types/node" in text and "`@dataclass`" in text
    assert "support@example.com" in text and "alice-dev" not in text


@pytest.mark.parametrize(("body", "kept", "gone", "what"), [
    ("> Calling clamp with an empty range crashes\n\nSame here on 3.12, with the full traceback attached.",
     "Same here on 3.12", "> Calling clamp", "quoted_reply"),
    ("On Mon, Mar 4, 2024 at 9:00 AM Bob <bob@corp.io> wrote:\n> something else entirely\n\nFixed by pinning numpy.",
     "Fixed by pinning numpy.", "wrote:", "email_reply"),
    ("Fixed by pinning numpy.\n\n—\nReply to this email directly, view it on GitHub.\nYou are receiving this.",
     "Fixed by pinning numpy.", "Reply to this email", "email_reply"),
    ("Fixed by pinning numpy to 1.26 for now.\n\nSent from my iPhone", "pinning numpy", "iPhone", "signature"),
    ("Works for me.\n-- \nBob Example\nACME Corp, Springfield", "Works for me.", "ACME", "signature"),
    ("<!-- Describe what you tried -->\nI tried the nightly build.", "I tried the nightly build.", "Describe",
     "html_comment"),
])
def test_trimmed(body, kept, gone, what):
    trimmed = Counter()
    text = trim_text(body, [f" {' '.join(TEXT.lower().replace('.', '').split())} "], trimmed)
    assert kept in text and gone not in text and trimmed[what] == 1


def test_quote_of_new_text_and_quotes_in_code_are_kept():
    body = "> Note: clamp is documented to raise on an empty range.\n\nSo this is expected?\n\n```\n> prompt\n```"
    out, stats = clean(thread(comment("bob42", body)))
    assert out[0].comments[0].body == body and not stats.trimmed["quoted_reply"]


def test_template_boilerplate_and_empty_sections_are_removed():
    template = ("### Describe the bug\n{bug}\n\n### Environment\n_No response_\n\n### Checklist\n"
                "- [x] I have searched the existing issues for this bug\n- [ ] I have read the contributing guide")
    threads = [thread(number=str(n), body=template.format(bug=f"Bug number {n}: " + TEXT)) for n in range(5)]
    out, stats = clean(*threads)
    assert out[0].body == "### Describe the bug\nBug number 0: " + TEXT
    assert stats.trimmed["template_line"] == 10 and stats.trimmed["empty_section"] == 10
    few, _ = clean(*threads[:4])  # under template_min_threads: checklist lines are content
    assert "searched the existing issues" in few[0].body and "Environment" not in few[0].body


def test_nested_empty_sections():
    body = "## Report\n### Steps\n\n### Expected\nN/A\n\n## Notes\nIt fails only on Windows."
    assert strip_template(body, set(), Counter()) == "## Notes\nIt fails only on Windows."


@pytest.mark.parametrize("kind", ["github_token", "aws_access_key", "email", "gitlab_token", "slack_token"])
def test_planted_secret_in_a_comment_is_replaced(kind):
    value = values(random.Random(kind))[kind]
    out, stats = clean(thread(comment("bob42", f"My config uses {value} and it still crashes, see below.")))
    dumped = out[0].model_dump_json()
    assert value not in dumped and "still crashes" in dumped and sum(stats.replaced.values()) >= 1


@pytest.mark.parametrize("kind", ["github_token", "aws_access_key", "email", "ip_address"])
def test_planted_secret_in_a_ci_log_is_replaced(kind):
    value = values(random.Random(kind))[kind]
    failure = CIFailure(system="github_actions", project="acme/widgets", pipeline="CI", job="test", job_id="7",
                        commit="a" * 40, failed_at="2024-03-01T10:00:00Z",
                        excerpt=f"Run pytest\nconnecting with {value}\nE   AssertionError: 3 != 4")
    out, stats = clean_ci_failures([failure], SCRUB)
    assert value not in out[0].excerpt and "AssertionError: 3 != 4" in out[0].excerpt
    assert stats.changed == 1 and sum(stats.replaced.values()) >= 1


def test_ci_logs_lose_env_secrets_and_home_directories_and_empty_excerpts():
    excerpt = ("export DEPLOY_TOKEN=f00dcafe1234beef99\nAuthorization: Bearer abcDEF123456ghiJKL\n"
               "File \"/home/alice/src/app.py\", line 3\nFile \"/home/runner/work/app/app.py\"\n"
               "C:\\Users\\bob\\AppData\\x.py\nAPI_KEY: ***\n")
    failures = [CIFailure(system="gitlab_ci", project="g/p", pipeline="main", job="lint", job_id=str(n),
                          commit="b" * 40, failed_at="2024-03-01T10:00:00Z", excerpt=text)
                for n, text in enumerate([excerpt, "  \n"])]
    out, stats = clean_ci_failures(failures, SCRUB)
    text = out[0].excerpt
    for gone in ("f00dcafe1234beef99", "abcDEF123456ghiJKL", "alice", "bob"):
        assert gone not in text
    assert "/home/runner/work" in text and "/home/<USER>/src" in text and "API_KEY: ***" in text
    assert stats.dropped == {"empty_excerpt": 1} and stats.replaced["user_name"] == 2 and stats.replaced["token"] == 2


def test_length_filters_are_counted():
    settings = ThreadCleaningSettings(min_chars=50, max_chars=2000)
    out, stats = clean(thread(number="1", body="", title="crash"), thread(number="2", body="x " * 1500),
                       thread(number="3"), settings=settings)
    assert [t.number for t in out] == ["3"] and stats.dropped == {"too_short": 1, "too_long": 1}


def test_noise_and_empty_comments_are_dropped():
    out, stats = clean(thread(comment("bob42", "+1"), comment("carol", "👍👍", day=3),
                              comment("dan", "Any update?", day=4), comment("erin", "<!-- nothing -->", day=5),
                              comment("finn", "It also fails with a negative step, see the test below.", day=6)))
    assert len(out[0].comments) == 1 and stats.dropped_comments == {"noise": 3, "empty": 1}


def test_max_comments_keeps_the_first_ones_and_the_accepted_answer():
    comments = [comment(f"user{n}", f"Reply number {n} with some detail about the crash.", day=n + 2) for n in range(6)]
    comments[5] = comments[5].model_copy(update={"accepted": True})
    out, stats = clean(thread(*comments), settings=ThreadCleaningSettings(min_chars=20, max_comments=2))
    assert [c.body[:14] for c in out[0].comments] == ["Reply number 0", "Reply number 1", "Reply number 5"]
    assert stats.dropped_comments == {"over_max_comments": 3} and stats.truncated == 1
