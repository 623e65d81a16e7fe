"""Executors are configuration: each `execution` section of mochi.yaml gives a job whose executor config Dagster's
own schema accepts, and the pods the heavy steps ask Kubernetes for are what dagster-k8s makes of their op tags."""

from __future__ import annotations

import re

import dagster as dg
import pytest
import yaml
from dagster._config import validate_config
from dagster_k8s import DagsterK8sJobConfig
from dagster_k8s.job import construct_dagster_k8s_job, get_user_defined_k8s_config

from mochi_pipeline.cli import REPO_ROOT
from mochi_pipeline.config import ConfigError, parse_config
from mochi_pipeline.definitions import build_defs
from mochi_pipeline.execution import GPU_POOL, executor_definition

TRAINING = {"base_model", "fine_tuned_adapter", "evaluation_report"}  # pods with a GPU
CONVERTING = {"merged_model", "gguf_model", "gguf_lora_adapter"}  # a whole model in memory, on CPU

EXECUTIONS = {
    "default": ({}, "multiprocess"),
    "multiprocess": ({"executor": "multiprocess", "config": {"max_concurrent": 2}}, "multiprocess"),
    "k8s": ({"executor": "k8s", "config": {
        "job_namespace": "mochi", "max_concurrent": 4, "env_secrets": ["mochi-secrets"],
        "step_k8s_config": {"container_config": {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}},
    }}, "k8s"),
    "celery": ({"executor": "celery", "config": {"broker": {"env": "MOCHI_CELERY_BROKER"}, "backend": "rpc://"}},
               "celery"),
}


def readme_sections(key: str) -> list[dict]:
    """The ``key:`` sections of the README's yaml blocks, as a user copies them into mochi.yaml."""
    blocks = re.findall(r"```yaml\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.S)
    return [doc[key] for doc in map(yaml.safe_load, blocks) if isinstance(doc, dict) and key in doc]


def within(given: dict, used: dict) -> bool:
    """Every value of ``given`` is in ``used`` (which Dagster filled with defaults)."""
    return all(within(v, used[k]) if isinstance(v, dict) else used[k] == v for k, v in given.items())


def defs_for(sample_repo, tmp_path, execution: dict) -> dg.Definitions:
    return build_defs(parse_config({"repo": {"source": str(sample_repo)}, "execution": execution}, tmp_path))


@pytest.mark.parametrize("name", EXECUTIONS)
def test_each_execution_config_is_valid_for_dagsters_own_executor_schema(sample_repo, tmp_path, monkeypatch, name):
    execution, executor = EXECUTIONS[name]
    monkeypatch.setenv("MOCHI_CELERY_BROKER", "pyamqp://guest@localhost//")
    job = defs_for(sample_repo, tmp_path, execution).resolve_implicit_global_asset_job_def()
    assert job.executor_def.name == executor
    config = execution.get("config", {})
    assert validate_config(executor_definition(executor).config_schema.config_type, config).success
    resolved = dg.validate_run_config(job, {})  # the run config a launch from the UI or a sensor resolves to
    assert within({k: v for k, v in config.items() if k != "broker"}, resolved["execution"][executor])
    if "broker" in config:
        assert resolved["execution"][executor]["broker"] == "pyamqp://guest@localhost//"  # read from its env var


@pytest.mark.parametrize(("execution", "field", "says"), [
    ({"executor": "docker"}, "execution.executor", "multiprocess|k8s|celery"),
    ({"executor": "k8s", "config": {"job_namespce": "mochi"}}, "execution.config", "known keys: "),
    ({"config": {"max_concurrent": "many"}}, "execution.config", "max_concurrent"),
])
def test_a_wrong_execution_config_is_reported_when_mochi_yaml_is_read(tmp_path, execution, field, says):
    with pytest.raises(ConfigError) as err:
        parse_config({"execution": execution}, tmp_path, "mochi.yaml")
    assert f"{field} = " in str(err.value) and says in str(err.value)


def test_every_execution_and_dedup_config_in_the_readme_is_valid(sample_repo, tmp_path, monkeypatch):
    monkeypatch.setenv("MOCHI_CELERY_BROKER", "pyamqp://guest@localhost//")
    executions, dedups = readme_sections("execution"), readme_sections("dedup")
    assert {e["executor"] for e in executions} == {"k8s", "celery"} and dedups
    for execution in executions:
        job = defs_for(sample_repo, tmp_path, execution).resolve_implicit_global_asset_job_def()
        assert job.executor_def.name == execution["executor"]
        dg.validate_run_config(job, {})  # raises on anything Dagster's schema refuses
    for dedup in dedups:
        assert parse_config({"dedup": dedup}, tmp_path).dedup.lsh_storage == "redis"


def test_training_and_export_share_the_gpu_pool_and_nothing_else_does(sample_repo, tmp_path):
    defs = defs_for(sample_repo, tmp_path, {})
    pooled = {a.key.to_user_string() for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.op.pool}
    assert pooled == TRAINING | CONVERTING
    assert {a.op.pool for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.op.pool} == {GPU_POOL}


def step_pod(op: dg.OpDefinition):
    """The pod spec dagster-k8s builds for a step of ``op`` (from its op tags)."""
    user_config = get_user_defined_k8s_config(op.tags)  # what the k8s executor reads off the step
    job = construct_dagster_k8s_job(DagsterK8sJobConfig(job_image="mochi:test", dagster_home="/opt/dagster"),
                                    args=["dagster", "api", "execute_step"], job_name=op.name.replace("_", "-"),
                                    user_defined_k8s_config=user_config)
    return job.spec.template.spec


def test_k8s_pods_of_training_steps_get_a_gpu_and_tolerate_gpu_nodes(sample_repo, tmp_path):
    defs = defs_for(sample_repo, tmp_path, EXECUTIONS["k8s"][0])
    ops = {a.key.to_user_string(): a.op for a in defs.assets if isinstance(a, dg.AssetsDefinition)}
    for name in TRAINING | CONVERTING:
        pod = step_pod(ops[name])
        (container,) = pod.containers
        tolerations = [(t.key, t.operator, t.effect) for t in pod.tolerations or []]
        if name in TRAINING:
            assert container.resources.limits["nvidia.com/gpu"] == "1"  # a Kubernetes quantity
            assert ("nvidia.com/gpu", "Exists", "NoSchedule") in tolerations
        else:
            assert "nvidia.com/gpu" not in container.resources.limits and not tolerations
        assert container.resources.requests["cpu"] and container.resources.requests["memory"]
    data_step = get_user_defined_k8s_config(ops["code_chunks"].tags)
    assert not data_step.container_config  # the executor's step_k8s_config alone sizes the light steps


def test_training_on_several_gpus_asks_for_a_pod_with_as_many(sample_repo, tmp_path):
    cfg = parse_config({"repo": {"source": str(sample_repo)}, "execution": EXECUTIONS["k8s"][0],
                        "training": {"processes": 4}}, tmp_path)
    ops = {a.key.to_user_string(): a.op for a in build_defs(cfg).assets if isinstance(a, dg.AssetsDefinition)}
    (trainer,) = step_pod(ops["fine_tuned_adapter"]).containers
    assert trainer.resources.limits["nvidia.com/gpu"] == "4"
    (evaluator,) = step_pod(ops["evaluation_report"]).containers
    assert evaluator.resources.limits["nvidia.com/gpu"] == "1"
