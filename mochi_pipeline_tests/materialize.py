"""Materialize assets of the real code location (``build_defs``) for a config written by a test."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from mochi_pipeline.automation import code_partitions_at
from mochi_pipeline.config import MochiConfig, parse_config
from mochi_pipeline.dagster_internals import partition_range_tags
from mochi_pipeline.definitions import build_defs
from mochi_pipeline.ingestion.assets import observe_commit
from mochi_pipeline.preprocessing.assets import CODE_PARTITIONS, register_code_partitions

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
    """Materialize ``selection`` (with its asset checks) as `mochi run` does: code_chunks' partitions registered
    from the repository's current commit and all covered by the run; unselected inputs load from the artifacts."""
    defs = build_defs(cfg)
    instance = instance or dg.DagsterInstance.ephemeral()
    tags = dict(kwargs.pop("tags", None) or {})
    if "code_chunks" in selection:
        if partitions := code_partitions(cfg, instance):
            tags.update(partition_range_tags(partitions))
        else:  # a repository without code: nothing to chunk, as `mochi run` leaves it out
            selection = [name for name in selection if name != "code_chunks"]
    return dg.materialize(list(defs.assets), selection=list(selection), resources=defs.resources,
                          instance=instance, tags=tags, **kwargs)


def code_partitions(cfg: MochiConfig, instance: dg.DagsterInstance) -> list[str]:
    """Register code_chunks' partitions at the repository's current commit (as every mochi command does);
    returns them in the instance's order (the order a partition range follows)."""
    sha, _ = observe_commit(cfg.repo, cfg.paths)
    register_code_partitions(instance, code_partitions_at(cfg.repo, cfg.sources, cfg.chunking, cfg.paths, sha))
    return list(instance.get_dynamic_partitions(CODE_PARTITIONS.name))


def chunks_of(result: dg.ExecuteInProcessResult) -> list:
    """code_chunks' chunks of every partition of the run, in partition order."""
    return [c for part in result.output_for_node("code_chunks").values() for c in part]
