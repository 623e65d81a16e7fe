"""Base presets: their training defaults apply only to keys mochi.yaml leaves out."""

from __future__ import annotations

from mochi_pipeline.config import parse_config
from mochi_pipeline.training.base_models import PRESETS, with_preset_defaults


def test_tiny_preset_defaults_fill_only_unset_keys(tmp_path):
    cfg = parse_config({"training": {"base_model": "tiny", "learning_rate": 5e-4}}, tmp_path)
    effective = with_preset_defaults(cfg.training)
    defaults = dict(PRESETS["tiny"].training_defaults)
    assert effective.max_steps == defaults["max_steps"] != cfg.training.max_steps
    assert effective.max_seq_length == defaults["max_seq_length"]
    assert effective.learning_rate == 5e-4  # the user's value wins


def test_presets_without_defaults_and_unknown_models_keep_the_settings(tmp_path):
    for name in ("qwen2.5-coder-0.5b", "/some/local/model"):
        settings = parse_config({"training": {"base_model": name}}, tmp_path).training
        assert with_preset_defaults(settings) == settings
