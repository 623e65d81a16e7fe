"""Where the steps of a run execute (``execution`` section of mochi.yaml) and what the heavy ones ask for.

Which Dagster executor runs the steps is configuration: ``multiprocess`` (the default: each step in
a process of this machine), ``k8s`` (each step in its own Kubernetes Job; dagster-k8s, with the
K8sRunLauncher of the dagster Helm chart) or ``celery`` (steps queued to Celery workers;
dagster-celery). ``execution.config`` is that executor's own config, checked against Dagster's
schema of it when mochi.yaml is read. Where runs are *kept* (SQLite or Postgres) is dagster.yaml's.

Steps that hold a whole model share the ``gpu`` pool, limited to one at a time in dagster.yaml, so
two trainings never share a GPU; under k8s their op tags size their pods (other executors ignore them).
"""

from __future__ import annotations

import json
from typing import Any

import dagster as dg
from pydantic import Field, ValidationInfo, field_validator

from mochi_pipeline.settings_base import Section

GPU_POOL = "gpu"
K8S_CONFIG_TAG = "dagster-k8s/config"  # dagster_k8s.job.USER_DEFINED_K8S_CONFIG_KEY, without importing it here


def k8s_pod(cpu: str, memory: str, gpus: int = 0) -> dict[str, str]:
    """Op tags asking the k8s executor for a step pod of this size, with ``gpus`` NVIDIA GPUs."""
    limits: dict[str, Any] = {"memory": memory}
    config: dict[str, Any] = {"container_config": {"resources": {"requests": {"cpu": cpu, "memory": memory},
                                                                 "limits": limits}}}
    if gpus:
        limits["nvidia.com/gpu"] = gpus
        # GPU nodes are usually tainted so that only pods asking for a GPU land there.
        config["pod_spec_config"] = {"tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}
    return {K8S_CONFIG_TAG: json.dumps(config)}


GPU_POD = k8s_pod(cpu="4", memory="32Gi", gpus=1)  # pre-training the tiny base, evaluation (QLoRA on the GPU)


def training_pod(processes: int) -> dict[str, str]:
    """The fine-tuning step's pod: a GPU per training process (``training.processes``)."""
    return k8s_pod(cpu=str(4 * processes), memory=f"{32 * processes}Gi", gpus=processes)


CONVERT_POD = k8s_pod(cpu="4", memory="32Gi")  # merge and GGUF conversion: a whole model in memory, on CPU


def executor_definition(name: str) -> dg.ExecutorDefinition:
    if name == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    if name == "celery":
        from dagster_celery import celery_executor

        return celery_executor
    return dg.multiprocess_executor


class ExecutionSettings(Section):
    """How the steps of a run execute (runs started from the UI, sensors and schedules)."""

    executor: str = Field(
        "multiprocess", pattern="^(multiprocess|k8s|celery)$",
        description="multiprocess: each step in a process of this machine; k8s: each step in its own Kubernetes "
        "Job (dagster-k8s); celery: steps queued to Celery workers (dagster-celery).",
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="The executor's own Dagster config, e.g. multiprocess {max_concurrent: 2}; k8s {job_namespace: "
        "mochi, step_k8s_config: ...}; celery {broker: {env: CELERY_BROKER_URL}}. {} = its defaults.",
    )

    @field_validator("config")
    @classmethod
    def _valid_for_executor(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        from mochi_pipeline.dagster_internals import config_errors

        name = info.data.get("executor")
        if name is None:  # the executor itself was invalid: reported on its own
            return value
        if errors := config_errors(executor_definition(name).config_schema, value):
            raise ValueError(f"not a valid config of Dagster's {name} executor: " + "; ".join(errors))
        return value


def build_executor(settings: ExecutionSettings) -> dg.ExecutorDefinition:
    """The configured executor; unconfigured when ``config`` is empty, so a launch can still set it."""
    executor = executor_definition(settings.executor)
    return executor.configured(settings.config) if settings.config else executor
