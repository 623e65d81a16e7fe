"""Base presets: their training defaults fill the keys mochi.yaml leaves out, once, when it is read."""

from __future__ import annotations

import pytest
import yaml

from mochi_pipeline.config import parse_config
from mochi_pipeline.config_template import render_template
from mochi_pipeline.training.base_models import PRESETS
from mochi_pipeline.training.settings import PRESET_DEFAULTS, TrainingSettings


def test_tiny_preset_defaults_fill_only_unset_keys(tmp_path):
    training = parse_config({"training": {"base_model": "tiny", "learning_rate": 5e-4}}, tmp_path).training
    plain = TrainingSettings.model_fields
    assert training.max_steps == PRESET_DEFAULTS["tiny"]["max_steps"] != plain["max_steps"].default
    assert training.max_seq_length == PRESET_DEFAULTS["tiny"]["max_seq_length"]
    assert training.learning_rate == 5e-4  # the user's value wins


def test_other_models_keep_the_plain_defaults(tmp_path):
    for name in ("qwen2.5-coder-0.5b", "/some/local/model"):
        training = parse_config({"training": {"base_model": name}}, tmp_path).training
        assert training.max_steps == TrainingSettings.model_fields["max_steps"].default


def test_preset_defaults_name_real_presets_and_real_keys():
    for name, defaults in PRESET_DEFAULTS.items():
        assert name in PRESETS
        assert set(defaults) <= set(TrainingSettings.model_fields)


def test_init_template_leaves_preset_keys_to_the_preset(tmp_path):
    """`mochi init` must not pin the default base's values: switching base_model later gets that model's
    defaults."""
    data = yaml.safe_load(render_template())
    assert data["training"]["base_model"] == "gemma3-270m"
    assert parse_config(data, tmp_path).training.max_steps == PRESET_DEFAULTS["gemma3-270m"]["max_steps"]
    data["training"]["base_model"] = "qwen2.5-coder-0.5b"
    training = parse_config(data, tmp_path).training
    assert training.max_steps == TrainingSettings.model_fields["max_steps"].default


@pytest.mark.parametrize("base", ["tiny", "smollm2-135m-instruct"])
def test_an_init_config_switched_to_another_offline_base_gets_that_bases_defaults(tmp_path, base):
    """Every key any preset sets stays commented in `mochi init`'s file, also those the default preset leaves alone
    (written out, eval_during_training: 500 made each Gemma eval step score 500 examples on a CPU)."""
    data = yaml.safe_load(render_template())
    data["training"]["base_model"] = base
    training = parse_config(data, tmp_path).training
    for key, value in PRESET_DEFAULTS[base].items():
        assert getattr(training, key) == value, key
