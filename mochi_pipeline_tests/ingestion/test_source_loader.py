"""Loading source files from real repositories: filters, counted skips, languages, last commits."""

from __future__ import annotations

import pytest

from mochi_pipeline.ingestion.git_connector import open_repository
from mochi_pipeline.ingestion.languages import is_doc_language, language_for
from mochi_pipeline.ingestion.settings import SourceSettings
from mochi_pipeline.ingestion.source_loader import glob_match, load_source_files
from mochi_pipeline_tests.repo_factory import commit, git


@pytest.mark.parametrize(("path", "language"), [
    ("pkg/core.py", "python"), ("web/emitter.js", "javascript"), ("web/shapes.ts", "typescript"),
    ("ui/App.tsx", "tsx"), ("java/sample/Counter.java", "java"), ("go/sum.go", "go"), ("rust/counter.rs", "rust"),
    ("c/add.c", "c"), ("c/add.h", "c"), ("cpp/acc.cpp", "cpp"), ("cpp/acc.hpp", "cpp"), ("README.md", "markdown"),
    ("docs/guide.rst", "rst"), ("docs/notes.adoc", "asciidoc"), ("conf.yml", "yaml"), ("pyproject.toml", "toml"),
    ("run.sh", "shell"), ("notes.txt", "text"), ("Makefile", "make"), ("weird.xyz", "text"), ("UPPER.PY", "python"),
])
def test_language_for(path, language):
    assert language_for(path) == language


def test_doc_languages():
    assert all(is_doc_language(lang) for lang in ("markdown", "rst", "asciidoc"))
    assert not any(is_doc_language(lang) for lang in ("python", "text", "html"))


@pytest.mark.parametrize(("path", "pattern", "expected"), [
    ("node_modules/x/index.js", "**/node_modules/**", True),
    ("web/node_modules/x/index.js", "**/node_modules/**", True),
    ("web/app.min.js", "**/*.min.js", True),
    ("web/app.js", "**/*.min.js", False),
    ("a/b/c.py", "a/*.py", False),
    ("a/c.py", "a/*.py", True),
    ("deep/dir/file.md", "*.md", True),
    ("src/main.py", "src/**", True),
    ("src2/main.py", "src/**", False),
    ("x/test_a.py", "**/test_?.py", True),
    ("x/b.c", "**/[ab].c", True),
    ("x/c.c", "**/[!ab].c", True),
])
def test_glob_match(path, pattern, expected):
    assert glob_match(path, pattern) is expected


def test_sample_repo_files_and_skips(sample_repo):
    repo = open_repository(str(sample_repo), "/unused")
    files, skipped = load_source_files(repo, "HEAD", SourceSettings())
    by_path = {f.path: f for f in files}
    assert skipped == {"binary": 1, "not_utf8": 1}
    assert "assets/logo.png" not in by_path and "legacy/latin1.txt" not in by_path
    assert [f.path for f in files] == sorted(by_path)
    langs = {f.language for f in files}
    assert {"python", "javascript", "typescript", "java", "go", "rust", "c", "cpp",
            "markdown", "rst", "asciidoc"} <= langs
    util = by_path["pkg/util.py"]
    assert 'raise ValueError("empty range")' in util.text
    assert util.size == len(util.text.encode())
    assert util.sha == git(sample_repo, "rev-parse", "HEAD:pkg/util.py")
    assert util.last_commit_date == "2024-05-01T10:00:00+00:00"
    assert util.last_commit_sha == git(sample_repo, "rev-parse", "HEAD")
    assert by_path["pkg/core.py"].last_commit_date == "2024-01-01T10:00:00+00:00"
    assert by_path["pkg/__init__.py"].text == ""


def test_older_revision_reads_older_content(sample_repo):
    repo = open_repository(str(sample_repo), "/unused")
    files, _ = load_source_files(repo, "feature", SourceSettings())
    util = next(f for f in files if f.path == "pkg/util.py")
    assert "empty range" not in util.text
    assert util.last_commit_date == "2024-04-01T10:00:00+00:00"
    assert "notes.txt" not in {f.path for f in files}


def test_every_skip_reason_is_counted(tmp_path):
    repo_dir = tmp_path / "r"
    repo_dir.mkdir()
    git(repo_dir, "init", "-q", "-b", "main")
    commit(repo_dir, "Mixed files", "2024-01-01T00:00:00+00:00", {
        "keep.py": "print('hi')\n",
        "big.py": "x = 1\n" * 100,
        "nul.dat.txt": b"text\x00with a NUL\n",
        "image.png": b"not really a png but named so",
        "latin.txt": "caf\xe9\n".encode("latin-1"),
        "vendor/lib.py": "vendored = True\n",
        "docs/keep.md": "# Title\n",
    })
    (repo_dir / "link.py").symlink_to("keep.py")
    git(repo_dir, "add", "-A")
    git(repo_dir, "commit", "-q", "-m", "Add a symlink", date="2024-01-02T00:00:00+00:00")
    (repo_dir / "untracked.py").write_text("nope\n")

    settings = SourceSettings(max_file_bytes=100, exclude=["**/vendor/**"])
    files, skipped = load_source_files(open_repository(str(repo_dir), tmp_path), "HEAD", settings)
    assert [f.path for f in files] == ["docs/keep.md", "keep.py"]
    assert skipped == {"binary": 2, "excluded": 1, "not_utf8": 1, "symlink": 1, "too_large": 1}


def test_include_globs_select_files(sample_repo):
    repo = open_repository(str(sample_repo), "/unused")
    files, skipped = load_source_files(repo, "HEAD", SourceSettings(include=["pkg/**", "*.md"], exclude=[]))
    assert {f.path for f in files} == {"pkg/__init__.py", "pkg/core.py", "pkg/util.py", "pkg/dup.py", "README.md"}
    assert skipped == {"excluded": len(repo.list_files("HEAD")) - 5}
