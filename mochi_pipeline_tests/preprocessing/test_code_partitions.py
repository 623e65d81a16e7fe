"""code_chunks partitioned by directory: partitions from the commit sensor, a commit re-chunking only the
partitions it touched, and partitions chunked in separate runs (separate worker processes) making one corpus."""

from __future__ import annotations

import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import dagster as dg
import pytest

from mochi_pipeline.dagster_internals import partition_range_tags
from mochi_pipeline.definitions import build_defs
from mochi_pipeline.incremental import REUSED_KEY
from mochi_pipeline.io_manager import read_asset_file
from mochi_pipeline.preprocessing.assets import CODE_PARTITIONS
from mochi_pipeline.preprocessing.code_partitions import ROOT, partition_keys, partition_of
from mochi_pipeline_tests.materialize import chunks_of, code_partitions, materialize, project_config
from mochi_pipeline_tests.repo_factory import commit, git
from mochi_pipeline_tests.sensor_ticks import sensor_tick

PREPROCESSING = ["source_files", "clean_files", "code_chunks", "deduplicated_chunks"]
SAMPLE_PARTITIONS = ["c", "cpp", "go", "java/sample", "pkg", "rust", "tests", "web"]


@pytest.fixture
def repo(sample_repo, tmp_path):
    copy = tmp_path / "repo"
    shutil.copytree(sample_repo, copy)
    return copy


def _registered(instance: dg.DagsterInstance) -> list[str]:
    return sorted(instance.get_dynamic_partitions(CODE_PARTITIONS.name))


def _by_partition(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    return {e.partition: {k: v.value for k, v in e.metadata.items()}
            for e in result.asset_materializations_for_node("code_chunks")}


def test_a_file_belongs_to_its_directory_cut_to_the_depth():
    assert partition_of("src/app/models/user.py", 2) == "src/app"
    assert partition_of("src/app/models/user.py", 1) == "src"
    assert partition_of("src/app/models/user.py", 0) == ROOT
    assert partition_of("setup.py", 2) == ROOT
    assert partition_of("tests/test_x.py", 2) == "tests"
    paths = ["setup.py", "README.md", "docs/index.md", "notes/todo.txt", "data/x.json", "img/logo.png",
             "src/app/a.py", "src/app/b.go", "src/lib/c.rs", "tests/test_a.py"]
    assert partition_keys(paths, 2, ["text", "json"]) == [ROOT, "src/app", "src/lib", "tests"]
    assert partition_keys(paths, 2, ["text", "json", "python"]) == ["src/app", "src/lib"]


def test_the_commit_sensor_makes_the_partitions_the_directories_holding_code(repo, tmp_path):
    defs = build_defs(project_config(tmp_path, repo={"source": str(repo)}))
    instance = dg.DagsterInstance.ephemeral()
    cursor = sensor_tick(defs, instance, None).cursor
    assert _registered(instance) == SAMPLE_PARTITIONS

    commit(repo, "Add a plugin, drop the Go code", "2024-07-01T00:00:00+00:00",
           {"plugins/csv/reader.py": "def read(path):\n    return open(path).read()\n"})
    git(repo, "rm", "-q", "-r", "go")
    git(repo, "commit", "-q", "-m", "Drop Go", date="2024-07-02T00:00:00+00:00")
    sensor_tick(defs, instance, cursor)
    assert _registered(instance) == sorted({*SAMPLE_PARTITIONS, "plugins/csv"} - {"go"})


def test_a_commit_rechunks_only_the_partitions_it_touched(repo, tmp_path):
    cfg = project_config(tmp_path, repo={"source": str(repo)})
    defs = build_defs(cfg)
    instance = dg.DagsterInstance.ephemeral()
    cursor = sensor_tick(defs, instance, None).cursor
    first = materialize(cfg, PREPROCESSING, instance=instance)
    assert first.success
    assert _by_partition(first).keys() == set(SAMPLE_PARTITIONS)

    core = (repo / "pkg" / "core.py").read_text()
    commit(repo, "Add Point.norm", "2024-07-01T00:00:00+00:00", {"pkg/core.py": core + (
        "\n\ndef norm(p: Point) -> float:\n    \"\"\"Distance from the origin.\"\"\"\n"
        "    return math.hypot(p.x, p.y)\n")})
    sensor_tick(defs, instance, cursor)
    second = materialize(cfg, PREPROCESSING, instance=instance)
    assert second.success
    meta = second.asset_materializations_for_node("code_chunks")[0].metadata
    assert meta["rechunked_partitions"].value == ["pkg"] and meta["reused_partitions"].value == 7
    parts = _by_partition(second)
    assert REUSED_KEY not in parts["pkg"]
    assert {p: m[REUSED_KEY] for p, m in parts.items() if p != "pkg"} == {p: first.run_id for p in parts if p != "pkg"}
    assets = tmp_path / "artifacts" / "assets"
    assert "norm" in {c.symbol for c in read_asset_file(assets / "code_chunks" / "pkg.jsonl")}
    assert "norm" in {c.symbol for c in read_asset_file(assets / "deduplicated_chunks.jsonl")}

    # Nothing changed since: every partition is reused, and so is deduplicated_chunks.
    third = materialize(cfg, PREPROCESSING, instance=instance)
    assert third.asset_materializations_for_node("code_chunks")[0].metadata["rechunked_partitions"].value == []
    assert third.asset_materializations_for_node("deduplicated_chunks")[0].metadata[REUSED_KEY].value == second.run_id


def test_a_directory_no_partition_holds_fails_a_check_naming_it_and_the_fix(repo, tmp_path):
    cfg = project_config(tmp_path, repo={"source": str(repo)})
    instance = dg.DagsterInstance.ephemeral()
    known = code_partitions(cfg, instance)
    commit(repo, "Add a plugin", "2024-07-01T00:00:00+00:00",
           {"plugins/csv/reader.py": "def read(path):\n    return open(path).read()\n"})
    # A launch that did not register the new directory first (an old partition list, as in a stale UI).
    defs = build_defs(cfg)
    result = dg.materialize(list(defs.assets), selection=PREPROCESSING[:3], resources=defs.resources,
                            instance=instance, tags=partition_range_tags(known), raise_on_error=False)
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "code_chunks_cover_every_directory"]
    assert not check.passed
    assert "plugins/csv" in check.description and "mochi run" in check.description
    assert check.metadata["files_by_unregistered_directory"].value == {"plugins/csv": 1}


def _chunk_partitions(config: dict, dagster_home: str, partitions: list[str]) -> bool:
    """A worker: one run of code_chunks over ``partitions``, on the shared instance."""
    from mochi_pipeline.config import parse_config

    cfg = parse_config(config, Path(dagster_home))
    with dg.DagsterInstance.from_config(dagster_home) as instance:
        defs = build_defs(cfg)
        return dg.materialize(list(defs.assets), selection=["code_chunks"], resources=defs.resources,
                              instance=instance, tags=partition_range_tags(partitions)).success


@pytest.mark.slow  # two worker processes, each importing the whole pipeline
def test_partitions_chunked_in_separate_runs_by_separate_workers_make_one_corpus(repo, tmp_path):
    config = {"artifacts_root": str(tmp_path / "artifacts"), "repo": {"source": str(repo)},
              "chunking": {"partitions_per_run": 4}}
    cfg = project_config(tmp_path, **{k: v for k, v in config.items() if k != "artifacts_root"})
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.from_config(str(home)) as instance:
        partitions = code_partitions(cfg, instance)
        assert materialize(cfg, ["source_files", "clean_files"], instance=instance).success
    policy = build_defs(cfg).resolve_assets_def("code_chunks").backfill_policy
    assert policy == dg.BackfillPolicy.multi_run(4)  # what a backfill from the UI splits the partitions by

    halves = [partitions[:4], partitions[4:]]  # two runs of 4, as that backfill launches them
    # Not multiprocessing.Pool: its exit SIGTERMs the workers, and a worker whose materialize left a SIGTERM
    # handler behind did not die (the pool's join then hung CI); the executor ends its workers with sentinels.
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert list(pool.map(_chunk_partitions, [config] * 2, [str(home)] * 2, halves)) == [True, True]

    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/asset_partition_range_start": partitions[0]}))
        assert len(runs) == 1
        dedup = materialize(cfg, ["deduplicated_chunks"], instance=instance)
        assert dedup.success
    one_run = materialize(project_config(tmp_path / "single", repo={"source": str(repo)}), PREPROCESSING)
    assert read_asset_file(tmp_path / "artifacts" / "assets" / "deduplicated_chunks.jsonl") == \
        one_run.output_for_node("deduplicated_chunks")
    assert len(chunks_of(one_run)) == sum(
        len(read_asset_file(tmp_path / "artifacts" / "assets" / "code_chunks" / f"{p.replace('/', '%2F')}.jsonl"))
        for p in partitions)
