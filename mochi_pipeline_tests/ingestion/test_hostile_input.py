"""Hostile or odd repositories: a clear error or a counted skip, never a crash, never a read outside the repository."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from mochi_pipeline.io_manager import ArtifactError, read_asset_file, write_asset_file
from mochi_pipeline.records import Chunk
from mochi_pipeline_tests.materialize import DATA_ASSETS, materialize, project_config
from mochi_pipeline_tests.repo_factory import commit, git

DATE = "2024-03-01T10:00:00+00:00"


def _repo(tmp_path: Path, name: str = "repo") -> Path:
    repo = tmp_path / name
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    return repo


def _skips(result) -> dict:
    return result.asset_materializations_for_node("source_files")[0].metadata["skipped_by_reason"].value


def test_submodules_and_symlinks_are_counted_and_never_followed(tmp_path):
    other = _repo(tmp_path, "other")
    commit(other, "Other project", DATE, {"secret_of_other.py": "OTHER = 1\n"})
    repo = _repo(tmp_path)
    commit(repo, "Code", DATE, {"app.py": "def main():\n    return 1\n"})
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(other), "vendor_other")
    (repo / "etc_link").symlink_to("/etc")  # a directory outside the repository
    (repo / "passwd_link").symlink_to("/etc/passwd")
    commit(repo, "Add a submodule and links", DATE, {})
    result = materialize(project_config(tmp_path, repo={"source": str(repo)}), ["source_files"])
    files = {f.path: f for f in result.output_for_node("source_files")}
    assert set(files) == {"app.py", ".gitmodules"}
    assert _skips(result)["submodule"] == 1 and _skips(result)["symlink"] == 2
    assert not any("root:" in f.text for f in files.values())


def test_huge_files_non_utf8_names_and_deep_nesting_are_skips_not_crashes(tmp_path):
    repo = _repo(tmp_path)
    commit(repo, "Code", DATE, {"app.py": "def main():\n    return 1\n"})
    (repo / "data.py").write_text("x = 1\n" * 4_000_000)  # 24 MB
    os.close(os.open(os.path.join(os.fsencode(repo), b"caf\xe9.py"), os.O_CREAT | os.O_WRONLY))
    deep = "".join(" " * i + f"class C{i}:\n" for i in range(800)) + " " * 800 + "pass\n"  # deeper than the stack
    commit(repo, "Add odd files", DATE, {"deep.py": deep})
    # Deep nesting means long indented lines: let the minified-file filter pass them to the chunker.
    result = materialize(project_config(tmp_path, repo={"source": str(repo)}, filters={"minified_mean_line": 5000}),
                         ["source_files", "commit_history", "clean_files", "code_chunks"])
    assert result.success
    assert _skips(result)["too_large"] == 1 and _skips(result)["non_utf8_path"] == 1
    modes = result.asset_materializations_for_node("code_chunks")[0].metadata["files_by_mode"].value
    assert modes == {"ast": 1, "fallback_too_deep": 1}
    paths = {f.path for c in result.output_for_node("commit_history") for f in c.files}
    assert "caf\ufffd.py" in paths  # the history keeps it, readable


def test_every_git_call_refuses_dangerous_protocols(tmp_path, monkeypatch, sample_repo):
    """A git wrapper on PATH records each call's environment: GIT_ALLOW_PROTOCOL is always set."""
    log = tmp_path / "calls.log"
    real = shutil.which("git")
    wrapper = tmp_path / "bin" / "git"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "${{GIT_ALLOW_PROTOCOL:-UNSET}} $1 $2 $3" >> {log}\nexec {real} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}")
    origin = tmp_path / "origin.git"
    subprocess.run([real, "clone", "-q", "--bare", str(sample_repo), str(origin)], check=True)
    result = materialize(project_config(tmp_path, repo={"source": origin.as_uri()}), ["source_files", "commit_history"])
    assert result.success
    calls = log.read_text().splitlines()
    assert len(calls) > 5 and all(line.startswith("https:http:ssh:git:file ") for line in calls), calls


def test_shallow_clone_and_detached_head_build(sample_repo, tmp_path):
    shallow = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", sample_repo.as_uri(), str(shallow)], check=True)
    git(shallow, "checkout", "-q", "--detach", "HEAD")
    result = materialize(project_config(tmp_path, repo={"source": str(shallow)}), DATA_ASSETS)
    assert result.success
    assert len(result.output_for_node("commit_history")) == 1


def test_a_tampered_or_truncated_artifact_is_a_clear_error(tmp_path, monkeypatch):
    chunk = Chunk(id="1", path="a.py", language="python", kind="function", start_line=1, end_line=1, text="x = 1",
                  n_tokens=3)
    stored = write_asset_file(tmp_path / "code_chunks", [chunk])
    assert read_asset_file(stored) == [chunk]

    # A module that would run code when imported: reading an artifact that names it must not import it.
    (tmp_path / "evil_mod.py").write_text(f"open({str(tmp_path / 'pwned')!r}, 'w').close()\nclass X: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text('{"record": "evil_mod:X", "many": true}\n{}\n')
    with pytest.raises(ArtifactError, match=r"tampered\.jsonl names record type 'evil_mod:X'.*Delete it"):
        read_asset_file(tampered)
    assert "evil_mod" not in sys.modules and not (tmp_path / "pwned").exists()
    truncated = tmp_path / "truncated.jsonl"
    truncated.write_text(stored.read_text()[:-20])
    with pytest.raises(ArtifactError, match=r"truncated\.jsonl is damaged or truncated"):
        read_asset_file(truncated)


def test_a_damaged_upstream_artifact_fails_the_step_naming_the_file(sample_repo, tmp_path):
    cfg = project_config(tmp_path, repo={"source": str(sample_repo)})
    assert materialize(cfg, ["source_files"]).success
    stored = cfg.artifacts_path / "assets" / "source_files.jsonl"
    stored.write_text(stored.read_text()[: len(stored.read_text()) // 2])
    result = materialize(cfg, ["clean_files"], raise_on_error=False)
    failure = next(e for e in result.all_events if e.event_type_value == dg.DagsterEventType.STEP_FAILURE.value)
    assert "source_files.jsonl is damaged or truncated" in str(failure.step_failure_data.error)
