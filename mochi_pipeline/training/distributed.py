"""Training on several GPUs: the same ``trainer.train`` under ``accelerate launch``, one process per GPU.

With ``training.processes`` above 1, ``train_launched`` writes the run's job (``job.json``) and an
accelerate config (``accelerate.yaml``) next to its checkpoints and runs::

    python -m accelerate.commands.launch --config_file <run>/accelerate.yaml \\
        -m mochi_pipeline.training.distributed <run>/job.json

``lora``/``qlora`` train data-parallel (DDP: each GPU holds the model and its adapter, gradients are
averaged); ``full`` shards weights, gradients and optimiser state across the GPUs (FSDP, one
transformer block per shard unit) and gathers a full state dict to save. Each process takes
``batch_size`` sequences per step, so a step sees ``processes x batch_size x grad_accumulation``.
Rank 0 alone logs and writes the final model; the launcher's lines reach the asset's log as they come.
On a machine without a GPU the same launch runs its processes on the CPU (gloo), as the tests do.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

from mochi_pipeline.storage import atomic_write_text
from mochi_pipeline.training import trainer
from mochi_pipeline.training.base_models import ResolvedBase
from mochi_pipeline.training.settings import TrainingSettings
from mochi_pipeline.training.sft_data import load_dataset_dict

JOB_FILE = "job.json"
CONFIG_FILE = "accelerate.yaml"
LOG_MARK, ERROR_MARK = "[mochi] ", "[mochi:error] "  # how a launched process's lines reach the asset's log


class LaunchError(trainer.TrainingError):
    """The launched training failed; the message has the end of its output."""


def rank() -> int:
    """This process's rank among the launched ones (0 when not launched)."""
    return int(os.environ.get("RANK", "0"))


def accelerate_config(method: str, processes: int, block_classes: Sequence[str], main_port: int) -> dict:
    """accelerate's config for ``processes`` GPUs on this machine: DDP, or FSDP for a full fine-tune."""
    config = {
        "compute_environment": "LOCAL_MACHINE", "distributed_type": "MULTI_GPU", "num_machines": 1,
        "machine_rank": 0, "num_processes": processes, "gpu_ids": "all", "main_training_function": "main",
        "mixed_precision": "no",  # the trainer picks bf16 itself where the GPU has it (lora_config.use_bf16)
        "main_process_port": main_port, "rdzv_backend": "static", "same_network": True, "use_cpu": False,
    }
    if method == "full":
        config["distributed_type"] = "FSDP"
        config["fsdp_config"] = {
            "fsdp_version": 1, "fsdp_sharding_strategy": "FULL_SHARD", "fsdp_offload_params": False,
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            "fsdp_transformer_layer_cls_to_wrap": ",".join(block_classes),
            "fsdp_backward_prefetch": "BACKWARD_PRE", "fsdp_forward_prefetch": False,
            "fsdp_state_dict_type": "FULL_STATE_DICT", "fsdp_use_orig_params": True,
            "fsdp_cpu_ram_efficient_loading": True, "fsdp_sync_module_states": True,
        }
    return config


def block_classes(base: ResolvedBase) -> list[str]:
    """The model's transformer block classes (what FSDP wraps), from its config without loading weights."""
    import transformers
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base.path)
    for arch in config.architectures or []:
        if (cls := getattr(transformers, arch, None)) is not None and cls._no_split_modules:
            return list(cls._no_split_modules)
    raise LaunchError(f"Cannot tell the transformer block class of {base.name} ({config.architectures}) for FSDP; "
                      "train it with method lora, or on one GPU (training.processes: 1).")


def launch_command(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(run_dir / CONFIG_FILE),
            "-m", "mochi_pipeline.training.distributed", str(run_dir / JOB_FILE)]


def train_launched(dataset_dir: Path, base: ResolvedBase, settings: TrainingSettings, runs_dir: Path,
                   init_from: Path | None = None, log: Callable[[str], None] = print) -> trainer.TrainingResult:
    """``trainer.train`` in ``settings.processes`` processes: what rank 0 wrote to the run's final directory."""
    run_dir = runs_dir / trainer.run_id(settings, base, load_dataset_dict(dataset_dir), init_from)
    job = {"dataset_dir": str(dataset_dir), "base": dataclasses.asdict(base), "settings": settings.model_dump(),
           "runs_dir": str(runs_dir), "init_from": str(init_from) if init_from else None}
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / JOB_FILE, json.dumps(job, indent=1))
    classes = block_classes(base) if settings.method == "full" else []
    config = accelerate_config(settings.method, settings.processes, classes, settings.main_process_port)
    atomic_write_text(run_dir / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))
    cmd = launch_command(run_dir)
    log(f"Training in {settings.processes} processes: {' '.join(cmd)}")
    tail: list[str] = []
    errors: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}) as proc:
        for line in proc.stdout:
            line = line.rstrip()
            tail = [*tail[-19:], line]
            if line.startswith(LOG_MARK):
                log(line.removeprefix(LOG_MARK))
            elif line.startswith(ERROR_MARK):
                errors.append(line.removeprefix(ERROR_MARK))
    if proc.returncode:
        if errors:  # what a process raised, not the launcher's traceback
            raise LaunchError(f"The launched training failed: {errors[0]}")
        raise LaunchError(f"The launched training exited with {proc.returncode}; its last lines:\n" + "\n".join(tail))
    return trainer.TrainingResult.load(run_dir / trainer.FINAL_DIR)


def main(argv: Sequence[str] | None = None) -> None:
    """One launched process: the job's training, logging (rank 0) through stdout."""
    job = json.loads(Path((argv or sys.argv[1:])[0]).read_text(encoding="utf-8"))
    data = load_dataset_dict(job["dataset_dir"])
    log = (lambda msg: print(f"{LOG_MARK}{msg}", flush=True)) if rank() == 0 else (lambda msg: None)
    try:
        trainer.train(data, ResolvedBase(**{**job["base"], "target_modules": tuple(job["base"]["target_modules"])}),
                      TrainingSettings(**job["settings"]), Path(job["runs_dir"]), log=log,
                      init_from=Path(job["init_from"]) if job["init_from"] else None)
    except Exception as err:
        print(f"{ERROR_MARK}rank {rank()}: {type(err).__name__}: {err}".replace("\n", " "), flush=True)
        raise


if __name__ == "__main__":
    main()
