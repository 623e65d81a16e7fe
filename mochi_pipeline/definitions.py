"""The Dagster code location: every layer's assets, plus shared resources, schedules and sensors."""

import dagster as dg

from mochi_pipeline.automation import defs as automation_defs
from mochi_pipeline.data_generation.assets import defs as data_generation_defs
from mochi_pipeline.deployment.assets import defs as deployment_defs
from mochi_pipeline.ingestion.assets import defs as ingestion_defs
from mochi_pipeline.preprocessing.assets import defs as preprocessing_defs
from mochi_pipeline.resources import ArtifactIOManager, MochiProject
from mochi_pipeline.training.assets import defs as training_defs

project = MochiProject()

defs = dg.Definitions.merge(
    ingestion_defs,
    preprocessing_defs,
    data_generation_defs,
    training_defs,
    deployment_defs,
    automation_defs,
    dg.Definitions(resources={"project": project, "io_manager": ArtifactIOManager(project=project)}),
)
