"""The data_generation assets materialized on the sample repository, fed by the real upstream layers."""

import json
from pathlib import Path

from mochi_pipeline.io_manager import read_asset_file
from mochi_pipeline_tests.data_generation.chat_server import API_KEY, ChatServer
from mochi_pipeline_tests.materialize import DATA_ASSETS, materialize, project_config

DOCS = ["**/*.md", "**/*.rst", "**/*.adoc"]


def run(tmp_path: Path, repo_dir: Path, selection=DATA_ASSETS, raise_on_error: bool = True, **sections):
    cfg = project_config(tmp_path, **{"repo": {"source": str(repo_dir)}, **sections})
    return cfg, materialize(cfg, selection, raise_on_error=raise_on_error)


def metadata(result, key: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(key)[0].metadata.items()}


def test_whole_layer_from_the_sample_repository(sample_repo, tmp_path):
    cfg, result = run(tmp_path, sample_repo, generation={"dataset": {"max_generator_share": {"qa_generator": 0.3}}})
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()
              if e.asset_key.path == ["training_dataset"]}
    assert checks == {"schema_valid": True, "no_train_eval_overlap": True,
                      "mix_within_proportions": True, "no_secrets_in_training_data": True}

    meta = metadata(result, "training_dataset")
    assert meta["n_examples"]["train"] > 50 and meta["n_examples"]["eval"] > 0
    assert set(meta["by_generator"]) == {"completion_pairs", "doc_code_mapping", "commit_pairs", "qa_generator"}
    assert all(sum(counts.values()) > 0 for counts in meta["by_generator"].values())
    qa_train = meta["by_generator"]["qa_generator"]["train"]
    assert qa_train <= 0.3 * meta["n_examples"]["train"] and meta["dropped"]["over_max_share:qa_generator"] > 0
    assert "file:pkg/util.py" in meta["eval_sources"]  # the newest file is held out
    assert meta["token_lengths"].startswith("![token lengths](data:image/png;base64,iVBOR")
    assert Path(meta["token_lengths_png"]).read_bytes().startswith(b"\x89PNG")
    assert "**" in meta["samples"] and meta["empty_generators"] == "none"

    artifacts = cfg.artifacts_path
    stored = read_asset_file(artifacts / "assets" / "training_dataset.json")
    assert stored.path == str(artifacts / "dataset") and Path(stored.hf_path, "dataset_dict.json").exists()
    assert sum(1 for _ in open(stored.jsonl["train"])) == stored.n_examples["train"]
    commits = read_asset_file(artifacts / "assets" / "commit_pairs.jsonl")
    assert {e.task for e in commits} == {"commit_message", "commit_change"}
    assert metadata(result, "commit_pairs")["dropped_commits"] == {"merge": 1, "bot": 1, "trivial_message": 1}
    assert metadata(result, "qa_pairs")["backend"] == "OfflineQA"

    # Same inputs, same data versions: nothing downstream needs to rerun.
    versions = {k: result.asset_materializations_for_node(k)[0].tags["dagster/data_version"]
                for k in ("completion_pairs", "training_dataset")}
    _, again = run(tmp_path, sample_repo, generation={"dataset": {"max_generator_share": {"qa_generator": 0.3}}})
    assert versions == {k: again.asset_materializations_for_node(k)[0].tags["dagster/data_version"] for k in versions}


def test_qa_pairs_from_configured_endpoint(sample_repo, tmp_path, monkeypatch):
    monkeypatch.setenv("MOCHI_TEST_QA_KEY", API_KEY)
    with ChatServer() as server:
        qa = {"base_url": server.url, "model": "tiny", "api_key_env": "MOCHI_TEST_QA_KEY", "backoff_s": 0.01,
              "max_retries": 1}
        cfg, result = run(tmp_path, sample_repo, DATA_ASSETS[:-1], generation={"qa": qa})
    meta = metadata(result, "qa_pairs")
    assert meta["backend"] == "OpenAICompatibleQA" and meta["outcomes"]["answered"] > 5
    assert list((cfg.artifacts_path / "cache" / "qa").glob("*.json"))


def test_repo_with_code_only_still_builds_and_says_what_is_missing(sample_repo, tmp_path):
    _, result = run(tmp_path, sample_repo, repo={"source": str(sample_repo), "max_commits": 0},
                    sources={"exclude": DOCS + ["README*"]})
    assert result.success
    assert metadata(result, "commit_pairs")["missing"].startswith("no commit history")
    assert metadata(result, "commit_pairs")["n_examples"] == 0
    assert "no doc sections" in metadata(result, "doc_code_pairs")["missing"]
    meta = metadata(result, "training_dataset")
    assert meta["empty_generators"] == "commit_pairs" and meta["n_examples"]["train"] > 0


def test_repo_without_code_fails_naming_why(sample_repo, tmp_path):
    cfg, result = run(tmp_path, sample_repo, raise_on_error=False, repo={"source": str(sample_repo), "max_commits": 0},
                      sources={"include": DOCS})
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure and e.step_key == "training_dataset")
    message = failure.step_failure_data.user_failure_data.description
    assert message.startswith("The training dataset would be empty")
    assert "no code chunks" in message and "check sources.include" in message
    assert "commit_pairs: 0 examples" in message
    assert metadata(result, "completion_pairs")["missing"].startswith("no code chunks")
    assert not (cfg.artifacts_path / "dataset").exists()
    first_line = (cfg.artifacts_path / "assets" / "completion_pairs.jsonl").read_text().splitlines()[0]
    assert json.loads(first_line)["many"]


def test_eval_since_tag_holds_out_what_came_after_the_tagged_commit(sample_repo, tmp_path):
    import shutil
    from datetime import datetime

    from mochi_pipeline_tests.repo_factory import git

    repo_dir = tmp_path / "tagged"
    shutil.copytree(sample_repo, repo_dir)
    git(repo_dir, "tag", "v1.0", git(repo_dir, "log", "-1", "--format=%H", "--grep=Bump dependencies"))
    tag_date = datetime.fromisoformat("2024-04-03T10:00:00+00:00")
    tagged = {"eval_random_share": 0.0, "dataset": {"eval_since_tag": "v1.0"}}
    cfg, result = run(tmp_path, repo_dir, generation=tagged)
    meta = metadata(result, "training_dataset")
    stored = read_asset_file(cfg.artifacts_path / "assets" / "training_dataset.json")
    rows = {split: [json.loads(line) for line in open(stored.jsonl[split])] for split in ("train", "eval")}
    assert rows["eval"] and all(datetime.fromisoformat(r["date"]) > tag_date for r in rows["eval"])
    assert all(not r["date"] or datetime.fromisoformat(r["date"]) <= tag_date for r in rows["train"])
    assert "file:pkg/util.py" in meta["eval_sources"]

    # An unknown tag fails training_dataset alone (its inputs are read back from the stored artifacts).
    _, failed = run(tmp_path, repo_dir, ["training_dataset"], raise_on_error=False,
                    generation={**tagged, "dataset": {"eval_since_tag": "v9"}})
    failure = next(e for e in failed.all_events if e.is_step_failure and e.step_key == "training_dataset")
    message = failure.step_failure_data.user_failure_data.description
    assert "generation.dataset.eval_since_tag = 'v9'" in message and "Known tags: v1.0." in message


def test_the_dataset_checks_fail_on_a_dataset_that_breaks_them(sample_repo, tmp_path):
    """Checks no realistic input breaks, guarding the writer, the decontamination and the share caps against
    themselves: a train row also in eval under another template, a row with a column too many (what a writer bug
    would leave), a generator over its cap."""
    from mochi_pipeline.data_generation.assets import _check_results

    cfg, result = run(tmp_path, sample_repo, selection=[*DATA_ASSETS])
    stored = read_asset_file(cfg.artifacts_path / "assets" / "training_dataset.json")
    train = [json.loads(line) for line in open(stored.jsonl["train"])]
    # Same prompt and response as a train row, rendered otherwise: decontamination (on rendered texts) misses it.
    leaked, extra = dict(train[0], id="other", text="another template\n" + train[0]["text"]), dict(train[2], note="x")
    with open(stored.jsonl["eval"], "a") as fh:
        fh.write(json.dumps(leaked) + "\n")
    with open(stored.jsonl["train"], "a") as fh:
        fh.write(json.dumps(extra) + "\n")
    checks = {c.check_name: c for c in _check_results(stored, {train[0]["generator"]: 0.01})}
    assert {name for name, c in checks.items() if not c.passed} == {
        "schema_valid", "no_train_eval_overlap", "mix_within_proportions"}
    assert checks["no_train_eval_overlap"].metadata["overlapping"].value >= 1
    assert checks["schema_valid"].metadata["bad_rows"].value == 1