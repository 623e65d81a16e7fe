"""GGUF export with llama.cpp's converter, checked in llama.cpp against transformers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mochi_pipeline.deployment.gguf_export import (
    GGUFExportError,
    convert_hf_to_gguf,
    export_gguf,
    k_quant_skip_reason,
    quantize_gguf,
)
from mochi_pipeline.deployment.gguf_verify import Reference, load_llama, verify_gguf
from mochi_pipeline.deployment.settings import ExportSettings
from mochi_pipeline_tests.deployment.deploy_materialize import materialize_deployment

pytestmark = pytest.mark.slow  # converts and quantizes models with llama.cpp


def test_export_writes_each_quantization_and_states_skips(exported):
    result, values = exported
    assert result.success
    gguf = values["gguf_model"]
    sizes = {f.quantization: f.size_bytes for f in gguf.files}
    assert list(sizes) == ["f32", "f16", "q8_0"]
    assert sizes["f32"] > sizes["f16"] > sizes["q8_0"]
    assert all(Path(f.path).name == f"tiny-{f.quantization}.gguf" and Path(f.path).is_file() for f in gguf.files)
    assert "256" in gguf.skipped["q4_k_m"] and "hidden_size=64" in gguf.skipped["q4_k_m"]
    leftovers = [p.name for p in Path(gguf.directory).iterdir() if p.name.startswith(".")]
    assert leftovers == []
    meta = result.asset_materializations_for_node("gguf_model")[0].metadata
    assert meta["size_bytes_q8_0"].value == sizes["q8_0"]


def test_asset_check_passes_with_verification_table(exported):
    result, _ = exported
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == "gguf_matches_transformers" and evaluation.passed
    table = evaluation.metadata["verification"].value
    assert "| f32 |" in table and "| q8_0 |" in table


@pytest.fixture(scope="module")
def reference(tiny_model):
    return Reference.from_model_dir(tiny_model[0])


@pytest.mark.parametrize("quantization", ["f32", "f16", "q8_0"])
def test_llama_cpp_matches_transformers(exported, reference, quantization):
    gguf = exported[1]["gguf_model"]
    check = verify_gguf(reference, Path(gguf.file(quantization).path), quantization)
    assert check.tokens_identical
    assert check.chat_template_preserved and "### Instruction" in reference.chat_template
    assert check.eos_matches
    assert check.positions > 100
    if quantization == "f32":
        assert check.max_abs_diff <= 2e-4
    elif quantization == "f16":
        assert check.max_abs_diff <= 5e-2 and check.top1_agreement >= 0.98
    else:
        assert check.top1_agreement >= 0.95
    assert check.passed, check.problems


def test_verification_fails_for_a_different_model(exported, tiny_model):
    """The check can fail: the f32 GGUF against the model with the LoRA merged in."""
    gguf = exported[1]["gguf_model"]
    other = Reference.from_adapter(*tiny_model)
    check = verify_gguf(other, Path(gguf.file("f32").path), "f32")
    assert not check.passed
    assert any("logits differ" in p for p in check.problems)


def test_runtime_quantization_loads(exported, reference, tmp_path):
    """llama_model_quantize from the installed runtime writes a loadable k-quant file.

    Loaded, not compared with transformers: this stand-in's rows (64 wide) are narrower than a k-quant block
    (256), so llama.cpp stores them in other types and the file says little about k-quant accuracy; the
    export itself skips k-quants for such a model with that reason (test above)."""
    gguf = exported[1]["gguf_model"]
    out = quantize_gguf(Path(gguf.file("f32").path), tmp_path / "tiny-q4_k_m.gguf", "q4_k_m")
    llm = load_llama(out, n_ctx=64)
    try:
        assert llm.n_vocab() == 49152
    finally:
        llm.close()
    assert out.stat().st_size < Path(gguf.file("q8_0").path).stat().st_size


def test_k_quant_skip_reason(tmp_path):
    (tmp_path / "config.json").write_text('{"hidden_size": 512, "intermediate_size": 1536}')
    assert k_quant_skip_reason(tmp_path) is None
    (tmp_path / "config.json").write_text('{"hidden_size": 896, "intermediate_size": 4864}')
    assert "hidden_size=896" in k_quant_skip_reason(tmp_path)


def test_bad_inputs_are_clear_errors(tiny_model, tmp_path):
    model_dir, adapter_dir = tiny_model
    with pytest.raises(GGUFExportError, match="PEFT adapter"):
        export_gguf(adapter_dir, tmp_path, ["f16"])
    with pytest.raises(GGUFExportError, match="Unknown GGUF quantization"):
        export_gguf(model_dir, tmp_path, ["q3_weird"])
    with pytest.raises(GGUFExportError, match="no config.json"):
        export_gguf(tmp_path, tmp_path / "out", ["f16"])


def test_unmerged_peft_model_names_the_cause(tiny_model, tmp_path):
    """A checkpoint saved with LoRA layers still injected: the converter's error and the fix are quoted."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model_dir, adapter_dir = tiny_model
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), adapter_dir)
    unmerged = tmp_path / "unmerged"
    peft_model.base_model.model.save_pretrained(unmerged)
    assert any("base_layer" in k for k in peft_model.base_model.model.state_dict())
    with pytest.raises(GGUFExportError) as err:
        convert_hf_to_gguf(unmerged, tmp_path / "out.gguf", "f16")
    message = str(err.value)
    assert "convert_hf_to_gguf.py failed" in message and "merge_and_unload" in message
    assert not (tmp_path / "out.gguf").exists() and not list(tmp_path.glob(".*.gguf"))


def test_lora_gguf_applies_on_the_base(tiny_model, lora_exported):
    """gguf_lora_adapter: base GGUF + LoRA GGUF in llama.cpp reproduce the merged adapter in transformers."""
    model_dir, adapter_dir = tiny_model
    result, values = lora_exported
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == "lora_reproduces_merged_model" and evaluation.passed
    lora = values["gguf_lora_adapter"]
    assert Path(lora.path).is_file() and lora.size_bytes < lora.base_size_bytes / 100
    ids = [563, 284, 1209]
    logits = []
    for extra in ({}, {"lora_path": lora.path}):
        llm = load_llama(Path(lora.base_gguf_path), n_ctx=64, logits_all=True, **extra)
        try:
            llm.eval(ids)
            logits.append(torch.tensor(llm.scores[: len(ids)]))
        finally:
            llm.close()
    assert (logits[0] - logits[1]).abs().max() > 1e-3  # the adapter changes the outputs


def test_settings_reject_unknown_quantization():
    with pytest.raises(ValueError, match="unknown GGUF type"):
        ExportSettings(quantizations=["q2_xx"])


def test_full_fine_tuning_has_no_lora_to_export(tiny_model, tmp_path):
    model_dir, adapter_dir = tiny_model
    result, values = materialize_deployment(tmp_path, model_dir, adapter_dir, {}, ["gguf_lora_adapter"],
                                            method="full")
    assert result.success and "no adapter" in values["gguf_lora_adapter"].skipped
    assert not (tmp_path / "artifacts" / "gguf").exists()


def test_a_model_the_gate_rejected_is_never_exported(tiny_model, tmp_path):
    model_dir, adapter_dir = tiny_model
    result, values = materialize_deployment(tmp_path, model_dir, adapter_dir, {}, ["gguf_lora_adapter"],
                                            accepted=False, raise_on_error=False)
    assert not result.success and not values
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "gguf_lora_adapter"
    assert "quality gate rejected" in failure.step_failure_data.user_failure_data.description
    assert not (tmp_path / "artifacts" / "gguf").exists()


def test_export_for_the_cli(tiny_model, tmp_path):
    """exporter.export: GGUF + verification + Modelfile in one call (what `mochi export` runs)."""
    from mochi_pipeline.deployment.exporter import export

    messages: list[str] = []
    result = export(tiny_model[0], tmp_path, ExportSettings(quantizations=["q8_0"], model_name="cli"),
                    log=messages.append)
    assert [f.quantization for f in result.gguf.files] == ["q8_0"]
    assert result.verification.passed and result.verification.checks[0].top1_agreement >= 0.95
    assert Path(result.modelfile.path) == tmp_path / "Modelfile"
    assert "FROM ./cli-q8_0.gguf" in (tmp_path / "Modelfile").read_text()
    assert any("q8_0" in m for m in messages)


def test_mochi_export_of_a_model_directory_writes_verified_gguf_and_modelfile(tiny_model, tmp_path):
    from mochi_pipeline_tests.cli_runner import mochi

    model_dir, _ = tiny_model
    project = tmp_path / "project"
    project.mkdir()
    (project / "mochi.yaml").write_text(f"repo:\n  source: {project}\nexport:\n  quantizations: [f16]\n"
                                        "  model_name: outside\n")
    out = tmp_path / "out"
    printed = mochi(project, "export", "--model-dir", str(model_dir), "--out", str(out)).stdout
    assert f"Exports under {out}" in printed
    assert "| f16 |" in printed and "| yes |" in printed  # verified against transformers, and it passed
    gguf = out / "outside-f16.gguf"
    assert gguf.read_bytes()[:4] == b"GGUF"
    assert "FROM ./outside-f16.gguf" in (out / "Modelfile").read_text()
    assert load_llama(gguf).n_vocab() == 49152


def test_bf16_export_matches_transformers_within_its_tolerance(tiny_model, reference, tmp_path):
    gguf = export_gguf(tiny_model[0], tmp_path, ["bf16"], name="tiny")
    path = Path(gguf.file("bf16").path)
    assert path.name == "tiny-bf16.gguf" and path.read_bytes()[:4] == b"GGUF"
    check = verify_gguf(reference, path, "bf16")
    assert check.passed, check.problems
    assert check.tokens_identical and check.max_abs_diff > 0  # rounded to bf16: close, not identical
