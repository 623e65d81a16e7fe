"""mochi.yaml: defaults, discovery, and errors that name the field, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mochi_pipeline.config import ConfigError, load_config, parse_config
from mochi_pipeline.config_template import render_template


def test_defaults_target_the_repository_the_command_starts_in(sample_repo, monkeypatch):
    monkeypatch.delenv("MOCHI_CONFIG", raising=False)
    cfg = load_config(start=sample_repo / "pkg")
    assert cfg.repo_source == str(sample_repo)
    assert cfg.artifacts_path == sample_repo / ".mochi"


def test_relative_paths_resolve_against_the_config_file_not_the_cwd(tmp_path, monkeypatch):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "mochi.yaml").write_text("repo:\n  source: ../code\nartifacts_root: out\n")
    monkeypatch.chdir("/")
    cfg = load_config(tmp_path / "proj" / "mochi.yaml")
    assert cfg.repo_source == str(tmp_path / "code")
    assert cfg.artifacts_path == tmp_path / "proj" / "out"


@pytest.mark.parametrize(
    ("data", "field", "value"),
    [
        ({"chunking": {"max_tokens": 4}}, "chunking.max_tokens", "4"),
        ({"dedup": {"threshold": 1.5}}, "dedup.threshold", "1.5"),
        ({"training": {"method": "dpo"}}, "training.method", "'dpo'"),
        ({"chunking": {"strategy": "paragraph"}}, "chunking.strategy", "'paragraph'"),
        ({"chunkin": {}}, "chunkin", "{...}"),
    ],
)
def test_invalid_values_name_field_value_and_what_is_allowed(tmp_path, data, field, value):
    with pytest.raises(ConfigError) as err:
        parse_config(data, tmp_path, "mochi.yaml")
    message = str(err.value)
    assert f"{field} = {value}" in message
    assert "mochi.yaml" in message


def test_unknown_key_says_how_to_find_the_right_one(tmp_path):
    with pytest.raises(ConfigError, match="unknown key.*mochi init"):
        parse_config({"dedup": {"treshold": 0.8}}, tmp_path)


def test_broken_yaml_and_missing_file_are_reported_by_path(tmp_path):
    bad = tmp_path / "mochi.yaml"
    bad.write_text("repo: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist.*mochi init"):
        load_config(tmp_path / "missing.yaml")


def test_section_signatures_are_stable_and_change_with_values(tmp_path):
    a = parse_config({"chunking": {"max_tokens": 300}}, tmp_path)
    b = parse_config({"chunking": {"max_tokens": 300}}, tmp_path)
    c = parse_config({"chunking": {"max_tokens": 301}}, tmp_path)
    assert str(a.chunking) == str(b.chunking) != str(c.chunking)
    assert a.chunking.signature("strategy") == c.chunking.signature("strategy")  # only the fields named
    assert a.training.signature() == c.training.signature()


@pytest.mark.parametrize(("data", "field"), [
    ({"automation": {"retrain_cron": "nightly"}}, "automation.retrain_cron"),
    ({"automation": {"timezone": "Mars/Olympus"}}, "automation.timezone"),
    ({"trackers": {"start_date": "last week"}}, "trackers.start_date"),
    ({"ci": {"start_date": "31/01/2024"}}, "ci.start_date"),
])
def test_settings_are_checked_when_read(tmp_path, data, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        parse_config(data, tmp_path)


def test_init_template_parses_back_to_the_defaults(tmp_path):
    text = render_template()
    assert text.count("# ") > 20  # every key explained
    cfg = parse_config(yaml.safe_load(text), tmp_path)
    assert cfg.model_dump() == parse_config({}, tmp_path).model_dump()


def test_config_env_var_is_read_when_loading_not_at_import(tmp_path, monkeypatch):
    path = Path(tmp_path / "elsewhere.yaml")
    path.write_text("chunking:\n  max_tokens: 333\n")
    monkeypatch.setenv("MOCHI_CONFIG", str(path))
    assert load_config().chunking.max_tokens == 333
    monkeypatch.setenv("MOCHI_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="MOCHI_CONFIG"):
        load_config()


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "x" * 65, "-flag"])
def test_names_that_become_file_names_are_checked(tmp_path, name):
    with pytest.raises(ConfigError, match="export.model_name.*becomes a file name"):
        parse_config({"export": {"model_name": name}}, tmp_path)
