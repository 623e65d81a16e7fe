"""The ingestion assets materialized (and the repository observed) from the real code location."""

from __future__ import annotations

import dagster as dg
import pytest

from mochi_pipeline.definitions import build_defs
from mochi_pipeline.io_manager import read_asset_file
from mochi_pipeline.records import Commit, SourceFile
from mochi_pipeline_tests.materialize import materialize, project_config
from mochi_pipeline_tests.repo_factory import commit, git


def _metadata(result: dg.ExecuteInProcessResult, key: str) -> dict:
    (event,) = result.asset_materializations_for_node(key)
    return {k: v.value for k, v in event.metadata.items()}


def _observe(cfg, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    defs = build_defs(cfg)
    source = next(a for a in defs.assets if isinstance(a, dg.SourceAsset))
    job = dg.define_asset_job("observe_repo", selection=dg.AssetSelection.keys("git_repository"))
    with_job = dg.Definitions(assets=[source], jobs=[job], resources=defs.resources)
    return with_job.resolve_job_def("observe_repo").execute_in_process(instance=instance)


def test_materialize_source_files_and_commit_history(sample_repo, tmp_path):
    cfg = project_config(tmp_path, repo={"source": str(sample_repo), "max_commits": 5})
    result = materialize(cfg, ["source_files", "commit_history"])
    assert result.success

    stored = tmp_path / "artifacts" / "assets"
    files = read_asset_file(stored / "source_files.jsonl")
    assert files == result.output_for_node("source_files")
    assert all(isinstance(f, SourceFile) for f in files)
    assert "pkg/core.py" in {f.path for f in files}

    meta = _metadata(result, "source_files")
    assert meta["files"] == len(files)
    assert meta["bytes"] == sum(f.size for f in files)
    assert meta["skipped_by_reason"] == {"binary": 1, "not_utf8": 1}
    assert meta["files_by_language"]["python"] == 5
    assert meta["commit"] == git(sample_repo, "rev-parse", "HEAD")
    assert "| pkg/core.py | python |" in meta["preview"]

    commits = read_asset_file(stored / "commit_history.jsonl")
    assert len(commits) == 5 and all(isinstance(c, Commit) for c in commits)
    assert commits == result.output_for_node("commit_history")
    history_meta = _metadata(result, "commit_history")
    assert history_meta["commits"] == 5 and history_meta["merges"] == 1
    assert commits[0].sha[:10] in history_meta["preview"]
    assert "Make clamp" not in history_meta["preview"]  # subjects may hold secrets: only clean_commits shows them

    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"source_files_found": True}


def test_data_versions_follow_content(sample_repo, tmp_path):
    """Same content → same data version; a new commit → new SHA observed and new content hash."""
    repo_dir = tmp_path / "r"
    repo_dir.mkdir()
    git(repo_dir, "init", "-q", "-b", "main")
    first = commit(repo_dir, "First", "2024-01-01T00:00:00+00:00", {"a.py": "x = 1\n"})
    cfg = project_config(tmp_path, repo={"source": str(repo_dir)})
    instance = dg.DagsterInstance.ephemeral()

    def versions() -> tuple[str, str, str]:
        observed = _observe(cfg, instance)
        (obs,) = [e for e in observed.all_events if e.event_type_value == "ASSET_OBSERVATION"]
        materialized = materialize(cfg, ["source_files", "commit_history"], instance=instance)
        latest = {
            key: instance.get_latest_materialization_event(dg.AssetKey(key)).asset_materialization.tags[
                "dagster/data_version"]
            for key in ("source_files", "commit_history")
        }
        assert materialized.success
        return obs.event_specific_data.asset_observation.data_version, latest["source_files"], latest["commit_history"]

    sha1, files1, history1 = versions()
    assert sha1 == first
    assert versions() == (sha1, files1, history1)

    second = commit(repo_dir, "Second", "2024-01-02T00:00:00+00:00", {"b.py": "y = 2\n"})
    sha2, files2, history2 = versions()
    assert sha2 == second and files2 != files1 and history2 != history1


def test_remote_source_is_cloned_under_artifacts(tmp_path):
    origin = tmp_path / "origin"
    origin.mkdir()
    git(origin, "init", "-q", "-b", "main")
    commit(origin, "Only", "2024-01-01T00:00:00+00:00", {"main.go": "package main\n"})
    result = materialize(project_config(tmp_path, repo={"source": origin.as_uri()}), ["source_files"])
    (file,) = result.output_for_node("source_files")
    assert (file.path, file.language) == ("main.go", "go")
    (clone,) = [p for p in (tmp_path / "artifacts" / "repos").iterdir() if not p.name.startswith(".")]
    assert git(clone, "rev-parse", "--is-bare-repository") == "true"


@pytest.mark.parametrize(("repo", "message"), [
    ({"source": "not-a-dir"}, "does not exist"),
    ({"source": ".", "rev": "no-such-branch"}, "Unknown revision 'no-such-branch'"),
    ({"source": "ext::sh -c true"}, "ext::"),
])
def test_bad_repository_config_fails_with_a_clear_message(sample_repo, tmp_path, repo, message):
    if repo["source"] == ".":
        repo = {**repo, "source": str(sample_repo)}
    result = materialize(project_config(tmp_path, repo=repo), ["source_files"], raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert message in failure.event_specific_data.error.message
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]  # a fix, not a retry


def test_layer_definitions_and_lineage(sample_repo, tmp_path):
    graph = build_defs(project_config(tmp_path, repo={"source": str(sample_repo)})).resolve_asset_graph()
    for key in ("source_files", "commit_history"):
        node = graph.get(dg.AssetKey(key))
        assert node.parent_keys == {dg.AssetKey("git_repository")}
        assert node.group_name == "ingestion"
        assert {"git", "python"} <= {t.split("/")[-1] for t in node.tags if t.startswith("dagster/kind/")}
        assert node.code_version
    assert graph.get(dg.AssetKey("git_repository")).is_observable


def test_every_asset_of_a_run_reads_the_one_commit_pinned_for_it(tmp_path):
    repo_dir = tmp_path / "r"
    repo_dir.mkdir()
    git(repo_dir, "init", "-q", "-b", "main")
    old = commit(repo_dir, "First", "2024-01-01T00:00:00+00:00", {"a.py": "x = 1\n"})
    new = commit(repo_dir, "Second", "2024-01-02T00:00:00+00:00", {"b.py": "y = 2\n"})
    cfg = project_config(tmp_path, repo={"source": str(repo_dir)})

    # `mochi run` observes, then tags the run: both assets read that commit even though HEAD moved on.
    pinned = materialize(cfg, ["source_files", "commit_history"], tags={"mochi/commit": old})
    assert _metadata(pinned, "source_files")["commit"] == old
    assert [c.sha for c in pinned.output_for_node("commit_history")] == [old]
    assert {f.path for f in pinned.output_for_node("source_files")} == {"a.py"}

    # Untagged (the UI): the run's first step records what repo.rev is now, and every step reads that.
    instance = dg.DagsterInstance.ephemeral()
    result = materialize(cfg, ["source_files", "commit_history"], instance=instance)
    assert _metadata(result, "source_files")["commit"] == _metadata(result, "commit_history")["commit"] == new
    observations = instance.fetch_observations(dg.AssetKey("git_repository"), limit=5).records
    assert [o.asset_observation.tags["dagster/data_version"] for o in observations] == [new]


def _two_branch_repo(tmp_path) -> tuple:
    """main: A - B (tag v1.0 on A), dev: A - C."""
    repo_dir = tmp_path / "r"
    repo_dir.mkdir()
    git(repo_dir, "init", "-q", "-b", "main")
    a = commit(repo_dir, "A", "2024-01-01T00:00:00+00:00", {"a.py": "a = 1\n"})
    git(repo_dir, "tag", "-a", "v1.0", "-m", "release")
    git(repo_dir, "checkout", "-q", "-b", "dev")
    c = commit(repo_dir, "C", "2024-01-03T00:00:00+00:00", {"c.py": "c = 1\n"})
    git(repo_dir, "checkout", "-q", "main")
    b = commit(repo_dir, "B", "2024-01-02T00:00:00+00:00", {"b.py": "b = 1\n"})
    return repo_dir, a, b, c


def test_commit_history_reads_repo_branches_and_lists_branches_and_tags(tmp_path):
    repo_dir, a, b, c = _two_branch_repo(tmp_path)
    only_rev = materialize(project_config(tmp_path / "one", repo={"source": str(repo_dir)}), ["commit_history"])
    assert [x.sha for x in only_rev.output_for_node("commit_history")] == [b, a]
    meta = _metadata(only_rev, "commit_history")
    assert (meta["branches"], meta["tags"]) == (2, 1)
    assert "| branch | dev | " + c[:10] in meta["refs"] and "| tag | v1.0 | " + a[:10] in meta["refs"]
    assert meta["heads"] == {"HEAD": b}

    cfg = project_config(tmp_path / "two", repo={"source": str(repo_dir), "branches": ["dev"]})
    both = materialize(cfg, ["commit_history"])
    commits = both.output_for_node("commit_history")
    assert [x.sha for x in commits] == [c, b, a]  # A is on both branches: read once
    assert {x.sha: x.tags for x in commits} == {c: [], b: [], a: ["v1.0"]}
    assert _metadata(both, "commit_history")["heads"] == {"HEAD": b, "dev": c}


def test_unknown_branch_fails_naming_repo_branches_and_the_known_ones(tmp_path):
    repo_dir, *_ = _two_branch_repo(tmp_path)
    cfg = project_config(tmp_path, repo={"source": str(repo_dir), "branches": ["dve"]})
    result = materialize(cfg, ["commit_history"], raise_on_error=False)
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.message
    assert "repo.branches names 'dve'" in message and "Known branches: dev, main" in message


def test_incremental_history_follows_a_moved_branch_and_a_new_tag(tmp_path):
    repo_dir, a, b, c = _two_branch_repo(tmp_path)
    cfg = project_config(tmp_path, repo={"source": str(repo_dir), "branches": ["dev"]})
    instance = dg.DagsterInstance.ephemeral()
    first = materialize(cfg, ["commit_history"], instance=instance)
    assert [x.sha for x in first.output_for_node("commit_history")] == [c, b, a]

    # repo.rev has not moved: a new commit on dev and a new tag are still read, only the new commit from git.
    git(repo_dir, "checkout", "-q", "dev")
    d = commit(repo_dir, "D", "2024-01-04T00:00:00+00:00", {"d.py": "d = 1\n"})
    git(repo_dir, "tag", "v2.0", b)
    git(repo_dir, "checkout", "-q", "main")
    second = materialize(cfg, ["commit_history"], instance=instance)
    commits = second.output_for_node("commit_history")
    assert [x.sha for x in commits] == [d, c, b, a]
    assert {x.sha: x.tags for x in commits} == {d: [], c: [], b: ["v2.0"], a: ["v1.0"]}
    assert "reused_from_run" not in _metadata(second, "commit_history")
    logs = [e.message for e in instance.all_logs(second.run_id) if "new commits" in (e.message or "")]
    assert any("Read 1 new commits" in m for m in logs), logs

    # Nothing changed: the stored history is reused.
    third = materialize(cfg, ["commit_history"], instance=instance)
    assert "reused_from_run" in _metadata(third, "commit_history")
