"""The Dagster code location: mochi.yaml read once, each layer built from its own sections.

``defs`` is what ``workspace.yaml`` loads (``mochi ui``, ``dagster dev``): it reads mochi.yaml
(``$MOCHI_CONFIG``, else found from the working directory) when the location loads, never at
import. ``build_defs`` is the same for a config already in hand (the ``mochi`` CLI, tests). After
editing mochi.yaml, reload the code location in the UI to see what the edit made stale.
"""

import dagster as dg

from mochi_pipeline import automation
from mochi_pipeline.config import MochiConfig, load_config
from mochi_pipeline.data_generation import assets as data_generation
from mochi_pipeline.deployment import assets as deployment
from mochi_pipeline.execution import build_executor
from mochi_pipeline.incremental import chain_code_versions
from mochi_pipeline.ingestion import assets as ingestion
from mochi_pipeline.io_manager import ArtifactIOManager
from mochi_pipeline.preprocessing import assets as preprocessing
from mochi_pipeline.training import assets as training


def build_defs(cfg: MochiConfig) -> dg.Definitions:
    paths = cfg.paths
    layers = [
        ingestion.build_defs(cfg.repo, cfg.sources, paths),
        ingestion.build_tracker_defs(cfg.trackers, cfg.ci, paths),
        preprocessing.build_defs(cfg.chunking, cfg.dedup, cfg.filters, cfg.scrub, cfg.threads, paths),
        data_generation.build_defs(cfg.generation, cfg.scrub, paths),
        training.build_defs(cfg.training, paths),
        deployment.build_defs(cfg.export, paths, adapter=cfg.training.method != "full"),
    ]
    assets = [a for layer in layers for a in layer.assets or []]
    assets = automation.with_conditions(chain_code_versions(assets), cfg.automation)
    resources = {"io_manager": ArtifactIOManager(root=str(paths.artifacts))}
    for layer in layers:
        resources.update(layer.resources or {})
    return dg.Definitions.merge(
        dg.Definitions(
            assets=assets,
            resources=resources,
            executor=build_executor(cfg.execution),
        ),
        automation.build_defs(cfg.automation, cfg.repo, cfg.sources, cfg.chunking, cfg.trackers, cfg.ci, paths),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_defs(load_config())
