"""Commit examples from the sample repository's real history."""

import pytest

from mochi_pipeline.data_generation.commit_pairs import commit_pairs, drop_reason, split_hunks
from mochi_pipeline.data_generation.settings import CommitSettings
from mochi_pipeline.records import Commit, FileDiff


@pytest.fixture(scope="module")
def commits(upstream):
    return upstream.commits


def test_drops_merge_bot_and_trivial_commits(commits):
    result = commit_pairs(commits, CommitSettings())
    assert result.dropped == {"merge": 1, "bot": 1, "trivial_message": 1}
    assert result.used_commits == len(commits) - 3
    messages = {e.response for e in result.examples if e.task == "commit_message"}
    assert "Make clamp reject an empty range with a clear error" in messages
    assert not {"wip", "Bump dependencies", "Merge branch 'feature'"} & messages


def test_change_example_has_before_and_after(commits):
    result = commit_pairs(commits, CommitSettings())
    change = [e for e in result.examples if e.task == "commit_change"]
    assert len(change) == 1 and change[0].path == "pkg/util.py"
    assert "Make clamp reject an empty range" in change[0].instruction
    assert "raise ValueError" not in change[0].context and "return max(low, min(high, value))" in change[0].context
    assert 'raise ValueError("empty range")' in change[0].response
    assert change[0].commit == commits[0].sha and change[0].date == commits[0].date


def test_multi_file_commit_gives_one_message_example_over_all_files(commits):
    result = commit_pairs(commits, CommitSettings(max_context_chars=600))
    seven = next(e for e in result.examples if e.response == "Add sources in seven more languages")
    assert "--- c/add.c (A)" in seven.context
    shown, listed = seven.context.split("more changed files: ")
    for path in ("go/sum.go", "rust/counter.rs", "web/shapes.ts"):  # every file at least named
        assert f"--- {path} (A)" in shown or path in listed
    assert len(shown) <= 600 + len("[... 9 ")
    wide = commit_pairs(commits, CommitSettings(max_context_chars=6000)).examples
    assert "more changed files" not in next(e for e in wide if e.response == seven.response).context


def test_oversize_and_configurable_trivial_messages(commits):
    assert commit_pairs(commits, CommitSettings(max_diff_lines=10)).dropped["oversize_diff"] >= 3
    feature = next(c for c in commits if c.message.startswith("Add settings loader"))
    assert (
        drop_reason(feature, CommitSettings(trivial_messages=["add settings loader and clamp helper"]))
        == "trivial_message"
    )
    for message in ("Fix.", "WIP", "...", "typo", "Update"):
        assert drop_reason(feature.model_copy(update={"message": message}), CommitSettings()) == "trivial_message"
    bot = feature.model_copy(update={"author_name": "renovate", "author_email": "x@y"})
    assert drop_reason(bot, CommitSettings()) == "bot"


def test_split_hunks_multiple_hunks():
    diff = (
        "diff --git a/f.py b/f.py\n--- a/f.py\n+++ b/f.py\n@@ -1,2 +1,2 @@\n a = 1\n-b = 2\n+b = 3\n"
        "@@ -10,2 +10,3 @@\n x = 1\n+y = 2\n z = 3\n\\ No newline at end of file\n"
    )
    hunks = split_hunks(diff)
    assert hunks.before == "a = 1\nb = 2\n...\nx = 1\nz = 3\n"
    assert hunks.after == "a = 1\nb = 3\n...\nx = 1\ny = 2\nz = 3\n"
    commit = Commit(
        sha="abc",
        parents=["p"],
        author_name="A",
        author_email="a@x",
        date="2024-01-01T00:00:00+00:00",
        message="Change b and add y",
        files=[FileDiff(path="f.py", status="M", additions=2, deletions=1, diff=diff)],
    )
    tasks = [e.task for e in commit_pairs([commit], CommitSettings()).examples]
    assert tasks == ["commit_message", "commit_change"]


def test_a_file_turned_into_a_link_gives_no_change_example(tmp_path):
    from mochi_pipeline.ingestion.git_connector import open_repository
    from mochi_pipeline_tests.repo_factory import commit, git

    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit(repo, "Add the helpers", "2024-01-01T00:00:00+00:00",
           {"a.py": "x = 1\n", "f.py": "def f():\n    return 1\n"})
    commit(repo, "Make f return two", "2024-01-02T00:00:00+00:00", {"f.py": "def f():\n    return 2\n"})
    (repo / "f.py").unlink()
    (repo / "f.py").symlink_to("a.py")
    commit(repo, "Make f a link to a", "2024-01-03T00:00:00+00:00", {})
    commits = list(open_repository(str(repo), tmp_path / "cache").iter_commits("HEAD", 10))
    examples = commit_pairs(commits, CommitSettings()).examples
    changes = {e.response.strip(): e.instruction for e in examples if e.task == "commit_change"}
    # The real edit is learned; the type change (whose "after" would be the link's target, a.py) is not.
    assert list(changes) == ["def f():\n    return 2"] and "Make f return two" in changes["def f():\n    return 2"]
    assert "Make f a link to a" in {e.response for e in examples if e.task == "commit_message"}


def test_a_submodule_bump_gives_no_change_example(tmp_path):
    from mochi_pipeline.ingestion.git_connector import open_repository
    from mochi_pipeline_tests.repo_factory import commit, git

    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q", "-b", "main")
    commit(other, "One", "2024-01-01T00:00:00+00:00", {"o.py": "x = 1\n"})
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit(repo, "Add the code", "2024-01-01T00:00:00+00:00", {"a.py": "x = 1\n"})
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(other), "dep")
    commit(repo, "Add dep as a submodule", "2024-01-02T00:00:00+00:00", {})
    commit(other, "Two", "2024-01-03T00:00:00+00:00", {"o.py": "x = 2\n"})
    git(repo / "dep", "pull", "-q", "origin", "main")
    commit(repo, "Bump dep", "2024-01-04T00:00:00+00:00", {"a.py": "x = 2\n"})
    commits = list(open_repository(str(repo), tmp_path / "cache").iter_commits("HEAD", 10))
    bump = next(c for c in commits if c.message.startswith("Bump"))
    assert {f.path: f.status for f in bump.files} == {"a.py": "M", "dep": "M"}  # git reports the gitlink as changed
    examples = commit_pairs(commits, CommitSettings()).examples
    # The code change is learned; "Subproject commit <sha>" -> "Subproject commit <sha>" is not.
    assert [e.path for e in examples if e.task == "commit_change"] == ["a.py"]
