"""Training in several processes under `accelerate launch` (distributed.py), run here on the CPU: the command
mochi prints is the one that trains, ranks share the steps, rank 0 alone writes the model."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import ClusterConfig
from datasets import DatasetDict
from safetensors.torch import load_file

from mochi_pipeline.training import distributed
from mochi_pipeline.training.sft_data import load_dataset_dict
from mochi_pipeline_tests.loopback import PortTaken, on_a_free_port, port_taken
from mochi_pipeline_tests.training.store_project import fast_settings

pytestmark = pytest.mark.slow


def _without_eval(store_dataset: Path, tmp_path: Path) -> Path:
    """The store dataset without its eval split (no evaluations: short runs), saved where a job can name it."""
    DatasetDict({"train": load_dataset_dict(store_dataset)["train"]}).save_to_disk(str(tmp_path / "data"))
    return tmp_path / "data"


def _launch(dataset: Path, base, runs: Path, lines: list[str], port: int, **settings):
    """``train_launched`` on 2 processes whose rendezvous is ``port``; ``PortTaken`` when torch could not bind it."""
    lines.clear()
    try:
        return distributed.train_launched(dataset, base, fast_settings(processes=2, main_process_port=port, **settings),
                                          runs, log=lines.append)
    except distributed.LaunchError as err:
        if port_taken(str(err)):
            raise PortTaken(str(err)) from err
        raise


def test_two_launched_processes_train_one_lora_adapter_written_by_rank_0(tmp_path, store_dataset, tiny_base):
    dataset = _without_eval(store_dataset, tmp_path)
    lines: list[str] = []
    result = on_a_free_port(lambda port: _launch(dataset, tiny_base, tmp_path / "runs", lines, port,
                                                 max_steps=3, batch_size=2))

    assert result.global_step == 3
    # One group of two: each process trained on its share of every step. Without it (the CPU default) each
    # trained the whole job alone, both wrote the final folder as rank 0, and the first to finish removed
    # the checkpoints the other was still writing: "rank 0: No such file or directory (os error 2)".
    assert result.processes == 2
    assert any("accelerate.commands.launch --config_file" in line for line in lines)  # the command, to rerun
    assert any(line.startswith("fine-tuning: step 3/3") for line in lines)  # rank 0's progress reached the log
    assert sum(line.startswith("fine-tuning: step 1/3") for line in lines) == 1  # ...and only rank 0's
    run_dir = Path(result.output_dir).parent
    config = yaml.safe_load((run_dir / distributed.CONFIG_FILE).read_text())
    assert config["distributed_type"] == "MULTI_GPU" and config["num_processes"] == 2
    weights = load_file(str(Path(result.output_dir) / "adapter_model.safetensors"))
    assert any("lora_B" in name and t.abs().sum() > 0 for name, t in weights.items())  # it learned


def test_a_full_fine_tune_shards_each_transformer_block_with_fsdp(tiny_base):
    config = distributed.accelerate_config("full", 4, distributed.block_classes(tiny_base), 29500)
    assert config["distributed_type"] == "FSDP" and config["num_processes"] == 4
    assert config["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    assert config["fsdp_config"]["fsdp_state_dict_type"] == "FULL_STATE_DICT"  # one checkpoint rank 0 can save


@pytest.mark.parametrize("method", ["lora", "full"])
def test_the_accelerate_config_is_one_accelerate_reads(tmp_path, tiny_base, method):
    path = tmp_path / "accelerate.yaml"
    path.write_text(yaml.safe_dump(distributed.accelerate_config(method, 2, ["LlamaDecoderLayer"], 29500)))
    parsed = ClusterConfig.from_yaml_file(str(path))  # accelerate's own reader: unknown keys raise
    assert parsed.num_processes == 2
    assert str(parsed.distributed_type) == ("DistributedType.FSDP" if method == "full" else "DistributedType.MULTI_GPU")


def test_a_failed_launch_shows_the_end_of_its_output(tmp_path, store_dataset, tiny_base):
    dataset = _without_eval(store_dataset, tmp_path)
    with pytest.raises(distributed.LaunchError, match="no_such_module"):
        on_a_free_port(lambda port: _launch(dataset, tiny_base, tmp_path / "runs", [], port, max_steps=2,
                                            lora_targets=["no_such_module"]))
    assert not list((tmp_path / "runs").glob("*/final"))
