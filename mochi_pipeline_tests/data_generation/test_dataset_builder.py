"""Dataset building: time split, decontamination, mixing, and the files on disk."""

import json

import datasets
import pytest

from mochi_pipeline.data_generation.dataset_builder import (
    EmptyDatasetError,
    SplitResult,
    UnknownTagError,
    cap_shares,
    decontaminate,
    example_id,
    mix_violations,
    split_examples,
    time_split,
    to_row,
    write_dataset,
)
from mochi_pipeline.data_generation.settings import DatasetSettings
from mochi_pipeline.ingestion.git_connector import open_repository
from mochi_pipeline.records import TrainingExample
from mochi_pipeline_tests.repo_factory import commit, git

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()


def ex(i, *, date="2024-01-01", path=None, commit="", generator="completion_pairs", response=None):
    text = " ".join(WORDS[(i + k) % len(WORDS)] + str(i) for k in range(40))
    return TrainingExample(
        instruction=f"Task {i}",
        response=response or text,
        task="next_line",
        generator=generator,
        path=path or f"f{i}.py",
        commit=commit,
        date=date,
    )


def test_time_split_holds_out_newest_sources():
    examples = [ex(i, date=f"2024-0{1 + i % 5}-01", path=f"f{i % 5}.py") for i in range(50)]
    eval_ids, held = time_split(examples, time_share=0.2, random_share=0.0, seed=0)
    assert held == ["file:f4.py"]  # 10 examples per file: exactly the newest fits in 20%
    assert eval_ids == {example_id(e) for e in examples if e.path == "f4.py"}
    commits = [ex(i, commit="c-new", date="2024-09-01") for i in range(3)] + examples
    _, held = time_split(commits, time_share=0.2, random_share=0.0, seed=0)
    assert held[0] == "commit:c-new"


def test_random_share_is_seeded_and_order_independent():
    examples = [ex(i) for i in range(400)]
    a, _ = time_split(examples, 0.0, 0.1, seed=1)
    b, _ = time_split(list(reversed(examples)), 0.0, 0.1, seed=1)
    c, _ = time_split(examples, 0.0, 0.1, seed=2)
    assert a == b and a != c and 20 < len(a) < 70


def test_decontamination_drops_exact_and_near_duplicates():
    settings = DatasetSettings()
    base = ex(1)
    near = base.response.rsplit(" ", 1)[0] + " changed"  # the last of 40 tokens differs
    train = [to_row(e, "s") for e in (ex(1, path="copy.py"), ex(1, path="near.py", response=near), ex(3), ex(4))]
    train[0]["id"] = "exact-copy"
    eval_rows = [to_row(base, "s")]
    kept, dropped = decontaminate(train, eval_rows, settings)
    assert dropped == {"exact_overlap_with_eval": 1, "near_duplicate_of_eval": 1}
    assert [r["instruction"] for r in kept] == ["Task 3", "Task 4"]


def test_cap_shares_downsamples_to_the_limit():
    rows = [to_row(ex(i, generator="completion_pairs"), "s") for i in range(80)]
    rows += [to_row(ex(100 + i, generator="qa_generator"), "s") for i in range(20)]
    assert mix_violations(rows, {"completion_pairs": 0.5}) == {"completion_pairs": 0.8}
    capped, dropped = cap_shares(rows, {"completion_pairs": 0.5}, seed=0)
    assert mix_violations(capped, {"completion_pairs": 0.5}) == {}
    assert dropped == {"over_max_share:completion_pairs": 60} and len(capped) == 40
    assert cap_shares(list(reversed(rows)), {"completion_pairs": 0.5}, seed=0)[0] == list(reversed(capped))


def test_split_and_write(tmp_path):
    examples = [ex(i, date=f"2024-0{1 + i % 4}-01", path=f"f{i % 4}.py") for i in range(40)]
    examples += [ex(0), ex(50, response=" ")]  # an exact duplicate and an empty response
    split = split_examples(examples, DatasetSettings(), seed=0, time_share=0.25, random_share=0.0)
    assert split.dropped["exact_duplicate"] == 1 and split.dropped["empty_instruction_or_response"] == 1
    out = tmp_path / "dataset"
    artifact = write_dataset(split, out)
    assert artifact.n_examples == {"train": 30, "eval": 10} and artifact.counts == {
        "completion_pairs": {"train": 30, "eval": 10}
    }
    loaded = datasets.load_from_disk(artifact.hf_path)
    assert loaded["eval"].num_rows == 10 and set(loaded["eval"]["path"]) == {"f3.py"}
    row = json.loads(open(artifact.jsonl["train"]).readline())
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert row["messages"][2]["content"] == row["response"] and row["text"].endswith(row["response"])
    assert json.loads((out / "manifest.json").read_text())["content_hash"] == artifact.content_hash
    # Rewriting replaces the directory whole, and the same input gives the same content hash.
    again = write_dataset(split_examples(examples, DatasetSettings(), seed=0, time_share=0.25, random_share=0.0), out)
    assert again.content_hash == artifact.content_hash
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset"]


def test_eval_is_never_empty_unless_asked():
    big_sources = [ex(i, path=f"f{i % 2}.py", date=f"2024-0{1 + i % 2}-01") for i in range(20)]
    eval_ids, held = time_split(big_sources, time_share=0.1, random_share=0.0, seed=0)
    assert held == [] and len(eval_ids) == 1  # each file (10 examples) exceeds the budget of 2
    assert time_split(big_sources, time_share=0.0, random_share=0.0, seed=0)[0] == set()


def test_empty_eval_split_is_saved_as_jsonl_only(tmp_path):
    artifact = write_dataset(SplitResult(rows={"train": [to_row(ex(1), "s")], "eval": []}), tmp_path / "d")
    assert list(datasets.load_from_disk(artifact.hf_path)) == ["train"]
    assert (tmp_path / "d" / "eval.jsonl").read_text() == "" and artifact.n_examples == {"train": 1, "eval": 0}


def test_empty_training_split_is_an_error(tmp_path):
    with pytest.raises(EmptyDatasetError, match="eval_time_share"):
        write_dataset(SplitResult(rows={"train": [], "eval": [to_row(ex(1), "s")]}), tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_unknown_generator_in_mix_is_rejected():
    with pytest.raises(ValueError, match="unknown generator 'qa'"):
        DatasetSettings(max_generator_share={"qa": 0.5})


def test_undated_sources_are_held_out_in_seeded_order():
    examples = [ex(i, date="", path=f"f{i % 10}.py") for i in range(100)]
    eval_ids, held = time_split(examples, time_share=0.2, random_share=0.0, seed=0)
    assert len(held) == 2 and len(eval_ids) == 20
    assert time_split(list(reversed(examples)), 0.2, 0.0, seed=0)[1] == held
    assert time_split(examples, 0.2, 0.0, seed=5)[1] != held


def _tagged_history(tmp_path):
    """Four commits, v1.0 on the second; the third is dated just *before* it once time zones are counted."""
    repo = tmp_path / "tagged"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit(repo, "One", "2024-01-01T00:00:00+00:00", {"a.py": "a = 1\n"})
    commit(repo, "Two", "2024-02-01T00:00:00+00:00", {"b.py": "b = 1\n"})
    git(repo, "tag", "-a", "v1.0", "-m", "release")
    commit(repo, "Three", "2024-02-01T03:00:00+05:00", {"c.py": "c = 1\n"})  # 2024-01-31T22:00Z
    commit(repo, "Four", "2024-03-01T00:00:00+00:00", {"d.py": "d = 1\n"})
    return list(open_repository(str(repo), tmp_path).iter_commits("HEAD", 100))


def test_eval_since_tag_holds_out_exactly_the_examples_after_the_tagged_commit(tmp_path):
    commits = _tagged_history(tmp_path)
    four, three, two, one = commits
    assert two.tags == ["v1.0"]
    examples = [ex(10 * n + k, commit=c.sha, date=c.date) for n, c in enumerate(commits) for k in range(3)]
    examples += [ex(100, path="late.py", date="2024-02-15T00:00:00+00:00"), ex(101, path="early.py", date="2023-12-01")]
    settings = DatasetSettings(eval_since_tag="v1.0")
    split = split_examples(examples, settings, seed=0, time_share=0.5, random_share=0.0, commits=commits)
    after = {example_id(e) for e in examples if e.commit == four.sha or e.path == "late.py"}
    assert {r["id"] for r in split.rows["eval"]} == after  # eval_time_share is not used; Three is before the tag
    assert split.eval_sources == [f"commit:{four.sha}", "file:late.py"]
    assert not {r["id"] for r in split.rows["train"]} & after
    # The random share still applies on top.
    mixed = split_examples(examples, settings, seed=0, time_share=0.0, random_share=0.5, commits=commits)
    assert {r["id"] for r in mixed.rows["eval"]} > after


def test_unknown_eval_since_tag_names_the_setting_and_the_known_tags(tmp_path):
    commits = _tagged_history(tmp_path)
    with pytest.raises(UnknownTagError) as err:
        split_examples([ex(1)], DatasetSettings(eval_since_tag="v9"), seed=0, time_share=0.1, random_share=0.0,
                       commits=commits)
    assert "generation.dataset.eval_since_tag = 'v9'" in str(err.value) and "Known tags: v1.0." in str(err.value)
