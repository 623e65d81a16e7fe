"""The Dagster code location: every layer's assets, plus shared resources, schedules and sensors.

Layers are imported as modules (not their ``defs`` objects): Dagster's loader refuses a module
that holds more than one ``Definitions`` at top level.
"""

import dagster as dg

from mochi_pipeline import automation
from mochi_pipeline.data_generation import assets as data_generation
from mochi_pipeline.deployment import assets as deployment
from mochi_pipeline.ingestion import assets as ingestion
from mochi_pipeline.preprocessing import assets as preprocessing
from mochi_pipeline.resources import ArtifactIOManager, MochiProject
from mochi_pipeline.training import assets as training

project = MochiProject()

defs = dg.Definitions.merge(
    ingestion.defs,
    preprocessing.defs,
    data_generation.defs,
    training.defs,
    deployment.defs,
    automation.defs,
    dg.Definitions(resources={"project": project, "io_manager": ArtifactIOManager(project=project)}),
)
