"""Materialize assets of the real code location (``build_defs``) for a config written by a test."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from mochi_pipeline.config import MochiConfig, parse_config
from mochi_pipeline.definitions import build_defs

# Every asset of the data layers (ingestion -> training_dataset), in the order they run.
DATA_ASSETS = ["source_files", "commit_history", "issue_threads", "ci_failures", "clean_files", "clean_commits",
               "clean_issue_threads", "clean_ci_failures", "doc_sections", "project_conventions", "code_chunks",
               "deduplicated_chunks",
               "completion_pairs", "doc_code_pairs", "commit_pairs", "qa_pairs", "issue_pairs", "ci_fix_pairs",
               "training_dataset"]


def project_config(tmp_path: Path, **sections) -> MochiConfig:
    """A config with artifacts under ``tmp_path / 'artifacts'`` (sections as in mochi.yaml)."""
    return parse_config({"artifacts_root": str(tmp_path / "artifacts"), **sections}, tmp_path)


def materialize(cfg: MochiConfig, selection: Sequence[str], instance: dg.DagsterInstance | None = None,
                **kwargs) -> dg.ExecuteInProcessResult:
    """Materialize ``selection`` (with its asset checks); unselected inputs load from the stored artifacts."""
    defs = build_defs(cfg)
    return dg.materialize([*defs.assets, *defs.asset_checks], selection=list(selection), resources=defs.resources,
                          instance=instance, **kwargs)
