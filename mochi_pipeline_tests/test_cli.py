"""The `mochi` command as a user runs it: a subprocess in a real repository."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mochi_pipeline_tests.cli_runner import mochi, status_of
from mochi_pipeline_tests.repo_factory import commit


@pytest.fixture
def repo(sample_repo, tmp_path) -> Path:
    copy = tmp_path / "repo"
    shutil.copytree(sample_repo, copy)
    return copy


@pytest.mark.slow  # `mochi status`/`mochi run` in subprocesses: each loads the code location (seconds)
def test_init_run_status_follow_commits_and_config_edits(repo):
    mochi(repo, "init")
    assert (repo / "mochi.yaml").is_file() and ".mochi/" in (repo / ".gitignore").read_text()
    assert "already exists" in mochi(repo, "init", check=False).stderr

    run = mochi(repo, "run", "--select", "+deduplicated_chunks")
    assert "Materializing 4 asset(s)" in run.stdout
    assert "  FRESH    code_chunks (8 partitions)\n" in mochi(repo, "status").stdout
    status = status_of(repo)
    assert status["source_files"] == status["code_chunks"] == status["deduplicated_chunks"] == "FRESH"
    assert status["training_dataset"] == "MISSING"
    assert (repo / ".mochi" / "assets" / "deduplicated_chunks.jsonl").is_file()

    # A new commit: the repository's data version (its SHA) moves, so what reads it is stale.
    commit(repo, "Add a helper", "2024-06-01T10:00:00+00:00", {"pkg/extra.py": "def extra():\n    return 1\n"})
    assert status_of(repo)["source_files"] == "STALE"
    mochi(repo, "run", "--select", "+deduplicated_chunks")
    assert status_of(repo)["deduplicated_chunks"] == "FRESH"

    # An edit of the chunking settings makes the preprocessing layer stale, not ingestion.
    text = (repo / "mochi.yaml").read_text().replace("max_tokens: 512", "max_tokens: 300")
    (repo / "mochi.yaml").write_text(text)
    status = status_of(repo)
    assert status["source_files"] == "FRESH"
    assert status["code_chunks"] == status["deduplicated_chunks"] == "STALE"


@pytest.mark.slow  # `mochi status`/`mochi run` in subprocesses: each loads the code location (seconds)
def test_errors_are_one_readable_paragraph(repo, tmp_path):
    (repo / "mochi.yaml").write_text("dedup:\n  threshold: 3\n")
    proc = mochi(repo, "status", check=False)
    assert proc.returncode == 2
    assert "dedup.threshold = 3" in proc.stderr and "Traceback" not in proc.stderr

    plain = tmp_path / "not-a-repo"
    plain.mkdir()
    proc = mochi(plain, "run", "--select", "source_files", check=False)
    assert proc.returncode != 0
    assert "not a git repository" in proc.stderr and "Traceback" not in proc.stderr

    (repo / "mochi.yaml").unlink()
    proc = mochi(repo, "run", "--select", "nonexistent", check=False)
    assert "Unknown asset 'nonexistent'" in proc.stderr


@pytest.mark.slow  # `mochi status`/`mochi run` in subprocesses: each loads the code location (seconds)
def test_a_tracker_without_its_token_stops_and_one_that_is_down_only_warns(repo, monkeypatch):
    (repo / "mochi.yaml").write_text("trackers:\n  github:\n    repo: octo/widgets\n    url: http://127.0.0.1:9/api/v3\n"
                                     "    token_env: MOCHI_TEST_CLI_TOKEN\n    max_retries: 0\n")
    monkeypatch.delenv("MOCHI_TEST_CLI_TOKEN", raising=False)
    refused = mochi(repo, "status", check=False)
    assert refused.returncode != 0
    assert "the environment variable MOCHI_TEST_CLI_TOKEN (trackers.github.token_env) is not set" in refused.stderr
    monkeypatch.setenv("MOCHI_TEST_CLI_TOKEN", "ghp_cli_test_token")
    down = mochi(repo, "status")  # nothing listens on port 9: the rest of the project still shows
    assert "Warning: could not look at the trackers" in down.stderr and "trackers.github.url" in down.stderr
    assert "MISSING  issue_threads" in down.stdout and "ghp_cli_test_token" not in down.stdout + down.stderr


def test_init_force_overwrites_an_edited_config_and_keeps_the_gitignore(repo):
    mochi(repo, "init")
    (repo / "mochi.yaml").write_text("dedup:\n  threshold: 0.5\n")
    refused = mochi(repo, "init", check=False)
    assert refused.returncode == 2 and "Use --force" in refused.stderr
    assert (repo / "mochi.yaml").read_text() == "dedup:\n  threshold: 0.5\n"  # refused: untouched

    mochi(repo, "init", "--force")
    text = (repo / "mochi.yaml").read_text()
    assert "threshold: 0.5" not in text and "repo:" in text  # the commented template again
    assert (repo / ".gitignore").read_text().splitlines().count(".mochi/") == 1


@pytest.mark.slow  # `mochi status`/`mochi run` in subprocesses: each loads the code location (seconds)
def test_config_option_reads_that_file_from_any_directory(repo, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    config = tmp_path / "other.yaml"
    config.write_text(f"repo:\n  source: {repo}\nartifacts_root: {tmp_path / 'art'}\n")
    out = mochi(elsewhere, "--config", str(config), "status").stdout
    assert f"artifacts: {tmp_path / 'art'}" in out and "MISSING  source_files" in out

    config.write_text("dedup:\n  threshold: 3\n")  # the file named is the one read: its error, not another's
    assert "dedup.threshold = 3" in mochi(elsewhere, "--config", str(config), "status", check=False).stderr


def test_serve_without_an_exported_model_says_how_to_get_one(repo):
    proc = mochi(repo, "serve", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "No mochi-q8_0.gguf" in proc.stderr and "Run `mochi export` first" in proc.stderr
    assert "No mochi-f16.gguf" in mochi(repo, "serve", "--quantization", "f16", check=False).stderr
