"""Dagster assets of the training layer (thin wrappers over the logic modules beside this file).

Code versions name the logic; the ``training`` settings come from mochi.yaml at run time, so their
signature is recorded as metadata and hashed into each output's data version.
"""


from pathlib import Path

import dagster as dg

from mochi_pipeline.data_generation.dataset_builder import TrainingDatasetArtifact
from mochi_pipeline.metadata import png_markdown
from mochi_pipeline.resources import MochiProject
from mochi_pipeline.storage import content_hash
from mochi_pipeline.training import evaluation, merge, trainer
from mochi_pipeline.training.artifacts import BaseModelArtifact, EvaluationReport, FineTunedAdapter, MergedModel
from mochi_pipeline.training.base_models import BaseModelError, resolve_base, with_preset_defaults
from mochi_pipeline.training.sft_data import DatasetError, load_dataset_dict
from mochi_pipeline.training.tiny_base import TINY_VERSION, pretrain_report

GROUP = "training"
LOGIC_VERSION = "1"


def _dir_hash(path: Path) -> str:
    """Hash of a model directory's weights and configs (not run logs: a same-weights rerun keeps the version)."""
    names = {"config.json", "adapter_config.json", "tokenizer.json", "tokenizer_config.json"}
    files = sorted(p for p in path.rglob("*") if p.is_file() and (p.suffix == ".safetensors" or p.name in names))
    return content_hash(*(part for p in files for part in (p.relative_to(path).as_posix(), p.read_bytes())))


@dg.asset(group_name=GROUP, kinds={"pytorch", "huggingface"}, code_version=f"{LOGIC_VERSION}-tiny{TINY_VERSION}")
def base_model(context: dg.AssetExecutionContext, project: MochiProject) -> dg.Output[BaseModelArtifact]:
    """The base model to fine-tune: the offline `tiny` model (built and cached once) or a hub/local model."""
    settings = with_preset_defaults(project.config.training)
    try:
        resolved = resolve_base(settings.base_model, settings.tiny_pretrain_steps, log=context.log.info)
    except BaseModelError as err:
        raise dg.Failure(description=str(err)) from None
    pretraining = {}
    if settings.base_model == "tiny":
        pretraining = {k: v for k, v in pretrain_report(resolved.path).items() if k != "history"}
    record = BaseModelArtifact.from_resolved(resolved, pretraining)
    metadata = {
        "name": record.name,
        "path": dg.MetadataValue.path(record.path),
        "hf_id": record.hf_id or "(local)",
        "lora_targets": ", ".join(record.target_modules) or "(inferred when training)",
        **{f"pretraining_{k}": v for k, v in pretraining.items() if isinstance(v, int | float)},
    }
    return dg.Output(record, data_version=dg.DataVersion(content_hash(record.model_dump_json())), metadata=metadata)


@dg.asset(
    group_name=GROUP,
    kinds={"pytorch", "huggingface"},
    code_version=LOGIC_VERSION,
    check_specs=[dg.AssetCheckSpec("training_loss_decreased", asset="fine_tuned_adapter",
                                   description="The last logged training loss is below the first.")],
)
def fine_tuned_adapter(
    context: dg.AssetExecutionContext,
    project: MochiProject,
    base_model: BaseModelArtifact,
    training_dataset: TrainingDatasetArtifact,
):
    """LoRA/QLoRA adapter (or fully fine-tuned weights) trained with TRL's SFTTrainer; resumes a killed run."""
    settings = with_preset_defaults(project.config.training)
    try:
        data = load_dataset_dict(training_dataset)
        result = trainer.train(data, base_model.resolved(), settings, project.artifacts / "training",
                               log=context.log.info)
    except (DatasetError, trainer.TrainingError, BaseModelError) as err:
        raise dg.Failure(description=str(err)) from None
    final = Path(result.output_dir)
    digest = _dir_hash(final)
    record = FineTunedAdapter(
        path=str(final), method=result.method, base=base_model, dataset_path=training_dataset.path,
        global_step=result.global_step, first_train_loss=result.first_train_loss,
        last_train_loss=result.last_train_loss, best_eval_loss=result.best_eval_loss,
        trainable_parameters=result.trainable_parameters, content_hash=digest,
    )
    curve = final / trainer.CURVE_FILE
    yield dg.Output(record, data_version=dg.DataVersion(digest), metadata={
        "path": dg.MetadataValue.path(str(final)),
        "method": result.method,
        "settings": str(settings),
        "steps": result.global_step,
        "epochs": result.epochs,
        "train_examples": result.n_train,
        "eval_examples": result.n_eval,
        "trainable_parameters": result.trainable_parameters,
        "first_train_loss": result.first_train_loss,
        "last_train_loss": result.last_train_loss,
        "best_eval_loss": result.best_eval_loss,
        "resumed_from": result.resumed_from or "(fresh run)",
        "seconds": result.seconds,
        "loss_curve": png_markdown(curve.read_bytes(), "loss curve"),
        "loss_curve_png": dg.MetadataValue.path(str(curve)),
    })
    first, last = result.first_train_loss, result.last_train_loss
    yield dg.AssetCheckResult(
        check_name="training_loss_decreased",
        passed=first is not None and last is not None and last < first,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={"first": first, "last": last},
    )


@dg.asset(group_name=GROUP, kinds={"pytorch"}, code_version=LOGIC_VERSION)
def evaluation_report(
    context: dg.AssetExecutionContext,
    project: MochiProject,
    base_model: BaseModelArtifact,
    fine_tuned_adapter: FineTunedAdapter,
    training_dataset: TrainingDatasetArtifact,
) -> dg.Output[EvaluationReport]:
    """Base vs fine-tuned on the held-out split: perplexity per task/language, next-line exact match."""
    settings = with_preset_defaults(project.config.training)
    out_dir = project.artifacts / "training" / "evaluation"
    try:
        report = evaluation.evaluate(
            load_dataset_dict(training_dataset), base_model.resolved(), Path(fine_tuned_adapter.path),
            fine_tuned_adapter.method, settings, out_dir, log=context.log.info,
        )
    except (DatasetError, ValueError) as err:
        raise dg.Failure(description=str(err)) from None
    markdown = (out_dir / evaluation.REPORT_MD).read_text(encoding="utf-8")
    record = EvaluationReport(path=str(out_dir), markdown=markdown, metrics=report,
                              fine_tuned_better=report["fine_tuned_better"])
    base, tuned = report["base"]["overall"], report["fine_tuned"]["overall"]
    return dg.Output(record, data_version=dg.DataVersion(content_hash(record.model_dump_json())), metadata={
        "report": dg.MetadataValue.md(markdown),
        "plot": png_markdown((out_dir / evaluation.REPORT_PNG).read_bytes(), "perplexity per task"),
        "plot_png": dg.MetadataValue.path(str(out_dir / evaluation.REPORT_PNG)),
        "perplexity_base": base["perplexity"],
        "perplexity_fine_tuned": tuned["perplexity"],
        "exact_match_base": base["exact_match"],
        "exact_match_fine_tuned": tuned["exact_match"],
        "eval_examples": report["n_examples"],
    })


@dg.asset_check(asset=evaluation_report,
                description="The fine-tuned model has lower held-out perplexity than the base.")
def fine_tuned_beats_base(evaluation_report: EvaluationReport) -> dg.AssetCheckResult:
    base = evaluation_report.metrics["base"]["overall"]
    tuned = evaluation_report.metrics["fine_tuned"]["overall"]
    return dg.AssetCheckResult(
        passed=evaluation_report.fine_tuned_better,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "perplexity_base": base["perplexity"], "perplexity_fine_tuned": tuned["perplexity"],
            "exact_match_base": base["exact_match"], "exact_match_fine_tuned": tuned["exact_match"],
        },
    )


@dg.asset(group_name=GROUP, kinds={"pytorch", "safetensors"}, code_version=LOGIC_VERSION)
def merged_model(
    context: dg.AssetExecutionContext,
    project: MochiProject,
    base_model: BaseModelArtifact,
    fine_tuned_adapter: FineTunedAdapter,
    evaluation_report: EvaluationReport,
) -> dg.Output[MergedModel]:
    """The adapter merged into the base: one safetensors checkpoint with tokenizer and model card."""
    out_dir = project.artifacts / "training" / "merged"
    context.log.info(f"Merging {fine_tuned_adapter.path} into {base_model.path}")
    merge.merge(
        base_model.resolved(), Path(fine_tuned_adapter.path), fine_tuned_adapter.method, out_dir,
        data_description=f"mochi training_dataset at {fine_tuned_adapter.dataset_path}",
        metrics={k: evaluation_report.metrics[k]["overall"] for k in ("base", "fine_tuned")},
    )
    digest = _dir_hash(out_dir)
    record = MergedModel(path=str(out_dir), base_name=base_model.name, method=fine_tuned_adapter.method,
                         content_hash=digest)
    size = sum(p.stat().st_size for p in out_dir.glob("*.safetensors"))
    return dg.Output(record, data_version=dg.DataVersion(digest), metadata={
        "path": dg.MetadataValue.path(str(out_dir)),
        "safetensors_mb": round(size / 2**20, 2),
        "model_card": dg.MetadataValue.md((out_dir / "README.md").read_text(encoding="utf-8")),
    })


defs = dg.Definitions(
    assets=[base_model, fine_tuned_adapter, evaluation_report, merged_model],
    asset_checks=[fine_tuned_beats_base],
)
