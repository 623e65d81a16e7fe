"""git_connector against real repositories: URL safety, cloning and fetching, revisions, files, history."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mochi_pipeline.ingestion.git_connector import open_repository
from mochi_pipeline.ingestion.git_urls import GitError, is_remote_source, validate_remote_url
from mochi_pipeline_tests.repo_factory import commit, git


def _small_repo(root: Path, name: str = "small") -> Path:
    repo = root / name
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit(repo, "First", "2024-01-01T00:00:00+00:00", {"a.py": "x = 1\n"})
    return repo


@pytest.mark.parametrize("url", [
    "https://github.com/owner/repo.git",
    "http://example.com/repo.git",
    "ssh://git@example.com:2222/owner/repo.git",
    "git://example.com/repo.git",
    "file:///srv/git/repo.git",
    "git@github.com:owner/repo.git",
])
def test_safe_urls_are_accepted(url):
    assert is_remote_source(url)
    assert validate_remote_url(url) == url


@pytest.mark.parametrize(("url", "reason"), [
    ("ext::sh -c touch% /tmp/pwned", "ext::"),
    ("ext::sh", "ext::"),
    ("fd::17", "fd::"),
    ("-uhttps://example.com/x", "starts with '-'"),
    ("--upload-pack=touch /tmp/x", "starts with '-'"),
    ("https://example.com/a b", "whitespace"),
    ("https://example.com/a\nb", "whitespace or control"),
    ("ftp://example.com/repo.git", "scheme 'ftp'"),
    ("ssh://-oProxyCommand=evil/repo", "starts with '-'"),
    ("https:///no-host", "no host"),
])
def test_unsafe_urls_are_refused_with_the_url_and_a_fix(url, reason):
    with pytest.raises(GitError) as err:
        validate_remote_url(url)
    assert reason in str(err.value)
    assert repr(url) in str(err.value)
    assert "https://" in str(err.value)  # the fix lists what is allowed


@pytest.mark.parametrize("source", [".", "../repo", "/abs/path", "relative/dir", "C-drive"])
def test_local_paths_are_not_remote(source):
    assert not is_remote_source(source)


def test_open_refuses_unsafe_remote_before_running_git(tmp_path):
    with pytest.raises(GitError, match="ext::"):
        open_repository("ext::sh -c true", tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_clone_over_file_url_then_fetch_new_commit(tmp_path):
    origin = _small_repo(tmp_path)
    cache = tmp_path / "artifacts" / "repos"
    url = origin.resolve().as_uri()

    first = open_repository(url, cache)
    assert first.path.parent == cache
    assert first.resolve_rev("main") == git(origin, "rev-parse", "HEAD")
    assert [e.path for e in first.list_files("HEAD")] == ["a.py"]

    new_sha = commit(origin, "Second", "2024-01-02T00:00:00+00:00", {"b.py": "y = 2\n"})
    second = open_repository(url, cache)
    assert second.path == first.path  # same cache entry, fetched rather than cloned again
    assert second.resolve_rev("HEAD") == new_sha
    assert {e.path for e in second.list_files("HEAD")} == {"a.py", "b.py"}


def test_fetch_follows_a_renamed_default_branch(tmp_path):
    origin = _small_repo(tmp_path)
    url = origin.resolve().as_uri()
    open_repository(url, tmp_path / "cache")
    git(origin, "branch", "-m", "main", "trunk")
    sha = commit(origin, "On trunk", "2024-01-03T00:00:00+00:00", {"c.py": "z = 3\n"})
    assert open_repository(url, tmp_path / "cache").resolve_rev("HEAD") == sha


def test_clone_failure_names_the_url(tmp_path):
    url = (tmp_path / "missing").as_uri()
    with pytest.raises(GitError, match="Could not clone .*missing"):
        open_repository(url, tmp_path / "cache")
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == [], (
        "a failed clone leaves no half-written cache entry"
    )


def test_concurrent_opens_of_one_remote_share_the_clone(tmp_path):
    origin = _small_repo(tmp_path)
    url = origin.resolve().as_uri()
    with ThreadPoolExecutor(4) as pool:
        repos = list(pool.map(lambda _: open_repository(url, tmp_path / "cache"), range(4)))
    assert len({r.path for r in repos}) == 1
    assert {r.resolve_rev("HEAD") for r in repos} == {git(origin, "rev-parse", "HEAD")}


def test_revisions_resolve_to_full_shas(sample_repo):
    repo = open_repository(str(sample_repo), "/nonexistent-cache-unused")
    head = git(sample_repo, "rev-parse", "HEAD")
    feature = git(sample_repo, "rev-parse", "feature")
    assert repo.resolve_rev("HEAD") == head
    assert repo.resolve_rev("main") == head
    assert repo.resolve_rev("feature") == feature
    assert repo.resolve_rev(head[:8]) == head
    assert len(head) == 40


def test_tag_resolves_to_its_commit(tmp_path):
    repo_dir = _small_repo(tmp_path)
    git(repo_dir, "tag", "-a", "v1.0", "-m", "release")  # annotated: the tag object is not the commit
    sha = git(repo_dir, "rev-parse", "HEAD")
    commit(repo_dir, "After tag", "2024-01-02T00:00:00+00:00", {"b.py": "y = 2\n"})
    assert open_repository(str(repo_dir), tmp_path).resolve_rev("v1.0") == sha


@pytest.mark.parametrize("rev", ["no-such-branch", "deadbeefdeadbeef", "-n"])
def test_unknown_revision_is_a_clear_error(sample_repo, rev):
    repo = open_repository(str(sample_repo), "/unused")
    with pytest.raises(GitError) as err:
        repo.resolve_rev(rev)
    assert repr(rev) in str(err.value)
    assert "repo.rev" in str(err.value)


def test_unknown_revision_lists_known_branches(sample_repo):
    with pytest.raises(GitError, match="feature, main"):
        open_repository(str(sample_repo), "/unused").resolve_rev("mian")


def test_list_files_is_tracked_only_with_blob_shas_and_sizes(tmp_path):
    repo_dir = _small_repo(tmp_path)
    (repo_dir / "untracked.py").write_text("print('not committed')\n")
    (repo_dir / "a.py").write_text("x = 'changed but not committed'\n")
    entries = open_repository(str(repo_dir), tmp_path).list_files("HEAD")
    assert [e.path for e in entries] == ["a.py"]
    assert entries[0].sha == git(repo_dir, "rev-parse", "HEAD:a.py")
    assert entries[0].size == len("x = 1\n")


def test_list_files_at_an_older_revision(sample_repo):
    repo = open_repository(str(sample_repo), "/unused")
    first = git(sample_repo, "rev-list", "--max-parents=0", "HEAD")
    assert {e.path for e in repo.list_files(first)} == {"pkg/__init__.py", "pkg/core.py", "tests/test_core.py"}


def test_read_blobs_in_one_batch_matches_read_blob(sample_repo):
    repo = open_repository(str(sample_repo), "/unused")
    entries = repo.list_files("HEAD")
    blobs = repo.read_blobs(e.sha for e in entries)
    assert len(blobs) == len({e.sha for e in entries})
    for e in entries:
        assert blobs[e.sha] == repo.read_blob(e.sha)
        assert len(blobs[e.sha]) == e.size
    assert b"\x89PNG" in blobs[next(e.sha for e in entries if e.path == "assets/logo.png")]


def test_last_commits_per_file(sample_repo):
    repo = open_repository(str(sample_repo), "/unused")
    last = repo.last_commits("HEAD", ["pkg/util.py", "pkg/core.py", "README.md", "not/there.py"])
    assert last["pkg/util.py"][1] == "2024-05-01T10:00:00+00:00"
    assert last["pkg/core.py"][1] == "2024-01-01T10:00:00+00:00"
    assert last["README.md"][0] == git(sample_repo, "log", "-1", "--format=%H", "--", "README.md")
    assert "not/there.py" not in last


def test_empty_repository_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    with pytest.raises(GitError, match="has no commits yet"):
        open_repository(str(empty), tmp_path / "cache")


def test_non_git_directory_is_a_clear_error(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(GitError, match=r"is not a git repository; run `git init`"):
        open_repository(str(plain), tmp_path / "cache")


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(GitError, match="does not exist"):
        open_repository(str(tmp_path / "nope"), tmp_path / "cache")


def test_local_bare_repository_and_subdirectory(sample_repo, tmp_path):
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(sample_repo), str(bare)], check=True)
    head = git(sample_repo, "rev-parse", "HEAD")
    assert open_repository(str(bare), tmp_path).resolve_rev("HEAD") == head
    assert open_repository(str(sample_repo / "pkg"), tmp_path).path == sample_repo.resolve()


def test_commit_history_of_sample_repo(sample_repo):
    repo = open_repository(str(sample_repo), "/unused")
    commits = list(repo.iter_commits("HEAD", 100))
    assert len(commits) == 8
    assert commits[0].sha == git(sample_repo, "rev-parse", "HEAD")
    assert [c.date for c in commits] == sorted((c.date for c in commits), reverse=True)

    merge = next(c for c in commits if c.message == "Merge branch 'feature'")
    assert len(merge.parents) == 2
    assert {f.path for f in merge.files} == {"pkg/util.py", "pkg/dup.py"}  # diff against the first parent

    root = commits[-1]
    assert root.parents == []
    assert root.author_name == "Ada Lovelace" and root.author_email == "ada@example.com"
    assert root.date == "2024-01-01T10:00:00+00:00"

    bot = next(c for c in commits if c.author_name == "dependabot[bot]")
    assert bot.author_email == "bot@example.com"

    last = commits[0]
    assert last.message == "Make clamp reject an empty range with a clear error"
    (change,) = last.files
    assert (change.path, change.status, change.additions, change.deletions) == ("pkg/util.py", "M", 2, 0)
    assert change.diff.startswith("diff --git a/pkg/util.py b/pkg/util.py\n")
    assert '+        raise ValueError("empty range")\n' in change.diff

    docs = next(c for c in commits if c.message.startswith("Document usage"))
    logo = next(f for f in docs.files if f.path == "assets/logo.png")
    assert logo.binary and logo.diff == "" and logo.status == "A"
    readme = next(f for f in docs.files if f.path == "README.md")
    assert readme.additions == 18 and "+# Sample project\n" in readme.diff


def test_commit_history_max_count_and_numstat_against_git(sample_repo):
    repo = open_repository(str(sample_repo), "/unused")
    commits = list(repo.iter_commits("HEAD", 3))
    assert len(commits) == 3
    assert list(repo.iter_commits("HEAD", 0)) == []
    for c in commits:
        numstat = git(sample_repo, "show", "--numstat", "--format=", c.sha).splitlines()
        expected = {line.split("\t")[2]: (int(line.split("\t")[0]), int(line.split("\t")[1])) for line in numstat}
        assert {f.path: (f.additions, f.deletions) for f in c.files} == expected


def test_history_with_rename_delete_multiline_message_and_odd_names(tmp_path):
    repo_dir = _small_repo(tmp_path)
    body = "x = 1\n" + "".join(f"line_{i} = {i}\n" for i in range(20))
    commit(repo_dir, "Grow a.py", "2024-01-02T00:00:00+00:00", {"a.py": body, "gone.txt": "bye\n"})
    git(repo_dir, "mv", "a.py", "renamed file.py")
    (repo_dir / "gone.txt").unlink()
    (repo_dir / 'tab\tand "quote".md').write_text("# odd\n")
    (repo_dir / "ctrl.txt").write_text("a\x01b\x02c\n")  # control bytes in a text diff must not split records
    git(repo_dir, "add", "-A")
    git(repo_dir, "commit", "-q", "-m", "Rename and delete\n\nLonger body\nwith two lines.",
        date="2024-01-03T00:00:00+00:00")
    newest = next(open_repository(str(repo_dir), tmp_path).iter_commits("HEAD", 1))
    assert newest.message == "Rename and delete\n\nLonger body\nwith two lines."
    by_status = {f.status: f for f in newest.files}
    assert by_status["R"].path == "renamed file.py" and by_status["R"].old_path == "a.py"
    assert by_status["D"].path == "gone.txt" and by_status["D"].deletions == 1
    assert "-bye\n" in by_status["D"].diff
    added = {f.path: f for f in newest.files if f.status == "A"}
    assert "+# odd\n" in added['tab\tand "quote".md'].diff
    assert "+a\x01b\x02c\n" in added["ctrl.txt"].diff
    assert len(newest.files) == 4


def test_oversized_diff_keeps_counts_but_drops_text(sample_repo):
    repo = open_repository(str(sample_repo), "/unused")
    (change,) = next(repo.iter_commits("HEAD", 1, max_diff_bytes=50)).files
    assert change.diff == "" and change.additions == 2


def _history_repo(root: Path) -> Path:
    """Five commits: multi-line messages, a rename, a delete, and text holding a marker's first bytes."""
    repo_dir = _small_repo(root, "history")
    commit(repo_dir, "Add b\n\nBody line one.\nBody line two.", "2024-01-02T00:00:00+00:00",
           {"b.py": "".join(f"b_{i} = {i}\n" for i in range(30))})
    (repo_dir / "moved").mkdir()
    git(repo_dir, "mv", "b.py", "moved/b.py")
    commit(repo_dir, "Move b\n\n\nAfter two blank lines.", "2024-01-03T00:00:00+00:00",
           {"near.txt": "\x01mochi-commit but no closing byte\n"})  # a near-marker must not cut a record
    (repo_dir / "a.py").unlink()
    commit(repo_dir, "Drop a", "2024-01-04T00:00:00+00:00", {"c.py": "c = 3\n"})
    commit(repo_dir, "Edit c\n\n- one\n- two", "2024-01-05T00:00:00+00:00", {"c.py": "c = 4\n"})
    return repo_dir


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 13])
def test_history_is_the_same_when_markers_straddle_many_short_reads(tmp_path, monkeypatch, chunk):
    import mochi_pipeline.ingestion.git_history as git_history

    repo = open_repository(str(_history_repo(tmp_path)), tmp_path)
    paths = ["moved/b.py", "c.py", "near.txt", "a.py"]
    expected, expected_last = list(repo.iter_commits("HEAD", 100)), repo.last_commits("HEAD", paths)
    assert [c.message.partition("\n")[0] for c in expected] == ["Edit c", "Drop a", "Move b", "Add b", "First"]
    assert {f.status for f in expected[2].files} == {"R", "A"}
    # Reads shorter than the 14-byte marker: one marker spans up to 14 reads.
    monkeypatch.setattr(git_history, "_CHUNK", chunk)
    assert list(repo.iter_commits("HEAD", 100)) == expected
    assert repo.last_commits("HEAD", paths) == expected_last


def test_a_copy_is_an_added_file_and_a_type_change_is_a_modification_with_both_sides(tmp_path):
    repo_dir = _small_repo(tmp_path, "kinds")
    commit(repo_dir, "Add f", "2024-01-02T00:00:00+00:00", {"f.py": "line1\nline2\nline3\n"})
    copied = commit(repo_dir, "Copy a", "2024-01-03T00:00:00+00:00", {"copy.py": "x = 1\n"})
    (repo_dir / "f.py").unlink()
    (repo_dir / "f.py").symlink_to("a.py")
    retyped = commit(repo_dir, "Make f a link", "2024-01-04T00:00:00+00:00", {})
    # What git itself sees: a copy (when asked to find copies) and a type change.
    assert git(repo_dir, "show", "-C", "--find-copies-harder", "--name-status", "--format=", copied).startswith("C100")
    assert git(repo_dir, "show", "--name-status", "--format=", retyped) == "T\tf.py"

    by_sha = {c.sha: c for c in open_repository(str(repo_dir), tmp_path).iter_commits("HEAD", 10)}
    # mochi's log finds renames (-M), not copies: the copy is a new file with its whole content.
    (copy,) = by_sha[copied].files
    assert (copy.path, copy.old_path, copy.status, copy.additions, copy.deletions, copy.binary) == (
        "copy.py", "", "A", 1, 0, False)
    assert copy.diff.startswith("diff --git a/copy.py b/copy.py\nnew file mode 100644\n")
    assert copy.diff.endswith("--- /dev/null\n+++ b/copy.py\n@@ -0,0 +1 @@\n+x = 1\n")
    # FileDiff.status is A/M/D/R: a type change is an M whose diff holds both of git's sections (file out, link in).
    (link,) = by_sha[retyped].files
    assert (link.path, link.old_path, link.status, link.additions, link.deletions, link.binary) == (
        "f.py", "", "M", 1, 3, False)
    out, _, link_in = link.diff.partition("diff --git a/f.py b/f.py\nnew file mode 120000\n")
    assert out.startswith("diff --git a/f.py b/f.py\ndeleted file mode 100644\n") and out.endswith(
        "@@ -1,3 +0,0 @@\n-line1\n-line2\n-line3\n")
    assert link_in.endswith("+++ b/f.py\n@@ -0,0 +1 @@\n+a.py\n\\ No newline at end of file\n")


def test_credentials_in_urls_never_reach_error_messages(tmp_path):
    from mochi_pipeline.ingestion.git_urls import redact

    assert redact("https://bob:s3cret@example.com/r.git") == "https://***@example.com/r.git"
    assert redact("see ssh://git@host/x and https://tok@h/y") == "see ssh://***@host/x and https://***@h/y"
    # A real clone attempt against a closed loopback port: git fails, and the token is not in the error.
    with pytest.raises(GitError) as err:
        open_repository("https://bob:s3cret@127.0.0.1:9/r.git", tmp_path / "cache", timeout_s=30)
    assert "s3cret" not in str(err.value) and "***@127.0.0.1" in str(err.value)


# --- branches and tags ------------------------------------------------------------------------


def _branchy_repo(root: Path) -> tuple[Path, dict[str, str]]:
    """main: A - B - D, dev: A - C; v1.0 (annotated) on B, v0.9 (lightweight) on A."""
    repo = root / "branchy"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    shas = {"A": commit(repo, "A", "2024-01-01T00:00:00+00:00", {"a.py": "a = 1\n"})}
    git(repo, "tag", "v0.9")
    shas["B"] = commit(repo, "B", "2024-01-02T00:00:00+00:00", {"b.py": "b = 1\n"})
    git(repo, "tag", "-a", "v1.0", "-m", "release", date="2024-02-01T00:00:00+00:00")
    git(repo, "checkout", "-q", "-b", "dev", shas["A"])
    shas["C"] = commit(repo, "C", "2024-01-03T00:00:00+00:00", {"c.py": "c = 1\n"})
    git(repo, "checkout", "-q", "main")
    shas["D"] = commit(repo, "D", "2024-01-04T00:00:00+00:00", {"d.py": "d = 1\n"})
    return repo, shas


def test_refs_are_branches_then_tags_with_the_commit_and_its_date(tmp_path):
    repo_dir, shas = _branchy_repo(tmp_path)
    refs = open_repository(str(repo_dir), tmp_path).refs()
    assert [(r.kind, r.name, r.sha) for r in refs] == [
        ("branch", "dev", shas["C"]), ("branch", "main", shas["D"]),
        ("tag", "v0.9", shas["A"]), ("tag", "v1.0", shas["B"]),  # annotated: peeled to its commit
    ]
    assert {r.name: r.date for r in refs if r.kind == "tag"} == {
        "v0.9": "2024-01-01T00:00:00+00:00", "v1.0": "2024-01-02T00:00:00+00:00",  # the commit's date, not the tag's
    }


def test_history_of_two_branches_holds_each_shared_commit_once_with_its_tags(tmp_path):
    repo_dir, shas = _branchy_repo(tmp_path)
    repo = open_repository(str(repo_dir), tmp_path)
    commits = list(repo.iter_commits(["main", "dev"], 100))
    assert [c.sha for c in commits] == [shas[k] for k in "DCBA"]  # A is on both branches: once
    assert {c.message: c.tags for c in commits} == {"D": [], "C": [], "B": ["v1.0"], "A": ["v0.9"]}
    assert [c.sha for c in repo.iter_commits(["main", "dev"], 100, since=[shas["B"], shas["A"]])] == [
        shas["D"], shas["C"]]
    assert repo.all_reachable([shas["B"], shas["C"]], [shas["D"], shas["C"]])
    assert not repo.all_reachable([shas["C"]], [shas["D"]])
    assert not repo.all_reachable(["deadbeef" * 5], [shas["D"]])  # gone (history rewritten): not reachable


def test_unknown_branch_names_the_setting_and_the_known_branches(tmp_path):
    repo_dir, shas = _branchy_repo(tmp_path)
    repo = open_repository(str(repo_dir), tmp_path)
    assert repo.branch_heads(["dev"]) == {"dev": shas["C"]}
    with pytest.raises(GitError) as err:
        repo.branch_heads(["dev", "feature-x"])
    assert "repo.branches names 'feature-x'" in str(err.value) and "Known branches: dev, main." in str(err.value)
    with pytest.raises(GitError, match="Known branches: dev, main"):
        repo.branch_heads(["v1.0"])  # a tag is not a branch


def test_a_work_trees_remote_tracking_branches_can_be_read(tmp_path):
    repo_dir, shas = _branchy_repo(tmp_path)
    clone = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(repo_dir), str(clone)], check=True)  # local branch: main only
    repo = open_repository(str(clone), tmp_path)
    branches = [r.name for r in repo.refs() if r.kind == "branch"]
    assert branches == ["main", "origin/dev", "origin/main"]  # origin/HEAD is an alias, not a branch
    assert repo.branch_heads(["origin/dev"]) == {"origin/dev": shas["C"]}
    assert [c.message for c in repo.iter_commits(["main", "origin/dev"], 100)] == ["D", "C", "B", "A"]


def test_remote_clone_holds_every_branch_and_tag_and_fetch_moves_them(tmp_path):
    repo_dir, shas = _branchy_repo(tmp_path)
    url = repo_dir.resolve().as_uri()
    clone = open_repository(url, tmp_path / "cache")
    assert clone.branch_heads(["dev", "main"]) == {"dev": shas["C"], "main": shas["D"]}
    assert {r.name for r in clone.refs() if r.kind == "tag"} == {"v0.9", "v1.0"}
    git(repo_dir, "checkout", "-q", "dev")
    moved = commit(repo_dir, "E", "2024-01-05T00:00:00+00:00", {"e.py": "e = 1\n"})
    git(repo_dir, "tag", "v2.0")
    git(repo_dir, "checkout", "-q", "main")
    fetched = open_repository(url, tmp_path / "cache")
    assert fetched.branch_heads(["dev"]) == {"dev": moved}
    assert fetched.resolve_rev("HEAD") == shas["D"]  # the remote's default branch
    assert next(fetched.iter_commits("dev", 1)).tags == ["v2.0"]


def test_gitpython_guard_refuses_an_ext_url_even_past_our_own_policy(tmp_path, monkeypatch):
    """Our policy rejects ext:: first; with it switched off, GitPython's unsafe-protocol guard still does."""
    import mochi_pipeline.ingestion.git_connector as connector

    monkeypatch.setattr(connector, "validate_remote_url", lambda url: url)
    pwned = tmp_path / "pwned"
    with pytest.raises(GitError) as err:
        open_repository(f"ext::sh -c touch% {pwned}", tmp_path / "cache")
    assert "GitPython's UnsafeProtocolError guard refused it" in str(err.value) and not err.value.retryable
    assert not pwned.exists()
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


def test_a_failed_fetch_is_retryable_and_names_the_url_and_the_clone_stays_readable(tmp_path):
    origin = _small_repo(tmp_path)
    url = origin.resolve().as_uri()
    sha = open_repository(url, tmp_path / "cache").resolve_rev("HEAD")
    origin.rename(tmp_path / "moved")  # the remote is gone

    with pytest.raises(GitError, match="(?s)Could not fetch .*small.*Check the URL") as err:
        open_repository(url, tmp_path / "cache")
    assert err.value.retryable and ".." not in str(err.value)
    assert open_repository(url, tmp_path / "cache", fetch=False).resolve_rev("HEAD") == sha  # as observed


def test_a_damaged_clone_is_cloned_again(tmp_path):
    origin = _small_repo(tmp_path)
    url = origin.resolve().as_uri()
    clone = open_repository(url, tmp_path / "cache").path
    (clone / "HEAD").unlink()  # no longer a git repository
    (clone / "objects").rename(clone / "lost")
    sha = commit(origin, "Second", "2024-01-02T00:00:00+00:00", {"b.py": "y = 2\n"})

    again = open_repository(url, tmp_path / "cache")
    assert again.path == clone and again.resolve_rev("HEAD") == sha
    assert {e.path for e in again.list_files("HEAD")} == {"a.py", "b.py"}


def test_a_remote_that_never_answers_times_out_as_a_retryable_error(tmp_path):
    import socket
    import threading

    finished = threading.Event()

    def hold_silent(server: socket.socket) -> None:
        conn = server.accept()[0]
        # Closed at 300 s if the 2 s kill never came: git then fails on its own, so the match below fails, not hangs.
        finished.wait(300)
        conn.close()

    with socket.socket() as server:  # accepts the connection, then says nothing
        server.bind(("127.0.0.1", 0))
        server.listen()
        threading.Thread(target=hold_silent, args=(server,), daemon=True).start()
        # "within 2 s" is worded only when GitPython killed git at timeout_s (not when the connection closed).
        with pytest.raises(GitError, match="within 2 s.*git_timeout_s") as err:
            open_repository(f"http://127.0.0.1:{server.getsockname()[1]}/silent.git", tmp_path / "cache",
                            timeout_s=2)
        finished.set()
    assert err.value.retryable
