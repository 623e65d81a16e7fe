"""The data_generation assets materialized with Dagster on records read from the real sample repository."""

import json
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dg_chat_server import API_KEY, ChatServer
from dg_upstream import chunks_of, commits_of, docs_of

from mochi_pipeline.data_generation.assets import defs as dg_defs
from mochi_pipeline.data_generation.llm_client import AutoQA
from mochi_pipeline.ingestion.assets import defs as ingestion_defs
from mochi_pipeline.preprocessing.assets import defs as preprocessing_defs
from mochi_pipeline.records import Chunk, Commit, DocSection
from mochi_pipeline.resources import ArtifactIOManager, MochiProject, read_asset_file

LAYER_ASSETS = list(dg_defs.assets)


def upstream_assets(chunks: list[Chunk], docs: list[DocSection], commits: list[Commit]) -> list[dg.AssetsDefinition]:
    """Stand-ins for the preprocessing/ingestion assets, holding fixed records."""

    @dg.asset(name="deduplicated_chunks")
    def deduplicated_chunks() -> list[Chunk]:
        return chunks

    @dg.asset(name="doc_sections")
    def doc_sections() -> list[DocSection]:
        return docs

    @dg.asset(name="commit_history")
    def commit_history() -> list[Commit]:
        return commits

    return [deduplicated_chunks, doc_sections, commit_history]


@pytest.fixture(scope="module")
def records(sample_repo):
    return chunks_of(sample_repo), docs_of(sample_repo), commits_of(sample_repo)


def project_for(tmp_path: Path, repo: Path, generation: dict | None = None) -> MochiProject:
    config = {
        "repo": {"source": str(repo)},
        "artifacts_root": str(tmp_path / "artifacts"),
        "generation": generation or {},
    }
    (tmp_path / "mochi.yaml").write_text(yaml.safe_dump(config))
    return MochiProject(config_path=str(tmp_path / "mochi.yaml"))


def materialize(project: MochiProject, upstream: list[dg.AssetsDefinition], raise_on_error: bool = True):
    return dg.materialize(
        upstream + LAYER_ASSETS,
        resources={"project": project, "io_manager": ArtifactIOManager(project=project), "qa_llm": AutoQA()},
        raise_on_error=raise_on_error,
    )


def metadata(result, key: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(key)[0].metadata.items()}


def test_whole_layer_from_sample_records(records, sample_repo, tmp_path):
    project = project_for(tmp_path, sample_repo, {"dataset": {"max_generator_share": {"qa_generator": 0.3}}})
    result = materialize(project, upstream_assets(*records))
    assert result.success

    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {
        "schema_valid": True,
        "no_empty_fields": True,
        "no_train_eval_overlap": True,
        "mix_within_proportions": True,
    }

    meta = metadata(result, "training_dataset")
    assert meta["n_examples"]["train"] > 50 and meta["n_examples"]["eval"] > 0
    assert set(meta["by_generator"]) == {"completion_pairs", "doc_code_mapping", "commit_pairs", "qa_generator"}
    qa_train = meta["by_generator"]["qa_generator"]["train"]
    assert qa_train <= 0.3 * meta["n_examples"]["train"] and meta["dropped"]["over_max_share:qa_generator"] > 0
    assert meta["token_lengths"].startswith("![token lengths](data:image/png;base64,iVBOR")
    assert Path(meta["token_lengths_png"]).read_bytes().startswith(b"\x89PNG")
    assert "**" in meta["samples"] and meta["empty_generators"] == "none"

    stored = read_asset_file(project.artifacts / "assets" / "training_dataset.json")
    assert stored.path == str(project.artifacts / "dataset") and Path(stored.hf_path, "dataset_dict.json").exists()
    assert sum(1 for _ in open(stored.jsonl["train"])) == stored.n_examples["train"]
    commits = read_asset_file(project.artifacts / "assets" / "commit_pairs.jsonl")
    assert {e.task for e in commits} == {"commit_message", "commit_change"}
    assert metadata(result, "commit_pairs")["dropped_commits"] == {"merge": 1, "bot": 1, "trivial_message": 1}
    assert metadata(result, "qa_pairs")["backend"] == "OfflineQA"

    # Same inputs, same data versions: nothing downstream needs to rerun.
    versions = {
        k: result.asset_materializations_for_node(k)[0].tags["dagster/data_version"]
        for k in ("completion_pairs", "training_dataset")
    }
    again = materialize(project, upstream_assets(*records))
    assert versions == {k: again.asset_materializations_for_node(k)[0].tags["dagster/data_version"] for k in versions}


def test_qa_pairs_from_configured_endpoint(records, sample_repo, tmp_path, monkeypatch):
    monkeypatch.setenv("MOCHI_TEST_QA_KEY", API_KEY)
    chunks, docs, _ = records
    with ChatServer() as server:
        project = project_for(
            tmp_path,
            sample_repo,
            {
                "qa": {
                    "base_url": server.url,
                    "model": "tiny",
                    "api_key_env": "MOCHI_TEST_QA_KEY",
                    "backoff_s": 0.01,
                    "max_retries": 1,
                }
            },
        )
        up = upstream_assets(chunks, docs, [])
        result = dg.materialize(
            up + [a for a in LAYER_ASSETS if a.key.path[-1] == "qa_pairs"],
            resources={"project": project, "io_manager": ArtifactIOManager(project=project), "qa_llm": AutoQA()},
        )
    meta = metadata(result, "qa_pairs")
    assert meta["backend"] == "OpenAICompatibleQA" and meta["outcomes"]["answered"] > 5
    assert list((project.artifacts / "cache" / "qa").glob("*.json"))


def test_repo_with_code_only_still_builds_and_says_what_is_missing(records, sample_repo, tmp_path):
    chunks, _, _ = records
    project = project_for(tmp_path, sample_repo)
    result = materialize(project, upstream_assets(chunks, [], []))
    assert result.success
    assert metadata(result, "commit_pairs")["missing"].startswith("no commit history")
    assert metadata(result, "commit_pairs")["n_examples"] == 0
    assert "no doc sections" in metadata(result, "doc_code_pairs")["missing"]
    meta = metadata(result, "training_dataset")
    assert meta["empty_generators"] == "commit_pairs" and meta["n_examples"]["train"] > 0


def test_repo_without_code_fails_naming_why(sample_repo, tmp_path):
    project = project_for(tmp_path, sample_repo)
    result = materialize(project, upstream_assets([], [], []), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure and e.step_key == "training_dataset")
    message = failure.step_failure_data.user_failure_data.description
    assert message.startswith("The training dataset would be empty")
    assert "no code chunks" in message and "check sources.include" in message
    assert "commit_pairs: 0 examples" in message
    assert metadata(result, "completion_pairs")["missing"].startswith("no code chunks")
    assert not (project.artifacts / "dataset").exists()
    assert json.loads((project.artifacts / "assets" / "completion_pairs.jsonl").read_text().splitlines()[0])["many"]


def test_whole_chain_from_the_sample_repository(sample_repo, tmp_path):
    """Ingestion and preprocessing feed this layer for real: every generator contributes to the dataset."""
    project = project_for(tmp_path, sample_repo)
    upstream = list(ingestion_defs.assets) + list(preprocessing_defs.assets)
    result = materialize(project, upstream)
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations() if e.asset_key.path == ["training_dataset"])
    meta = metadata(result, "training_dataset")
    assert {g: sum(c.values()) > 0 for g, c in meta["by_generator"].items()} == {
        "completion_pairs": True,
        "doc_code_mapping": True,
        "commit_pairs": True,
        "qa_generator": True,
    }
    assert "file:pkg/util.py" in meta["eval_sources"]  # the newest file is held out
