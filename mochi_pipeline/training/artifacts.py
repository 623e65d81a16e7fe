"""Records the training assets return: where each model artifact lives, and what it scored."""

from __future__ import annotations

from pydantic import Field

from mochi_pipeline.records import Record
from mochi_pipeline.training.base_models import ResolvedBase


class BaseModelArtifact(Record):
    name: str = Field(description="training.base_model as configured (preset, hub id or path).")
    path: str = Field(description="Local directory with config, weights and tokenizer.")
    hf_id: str = Field("", description="Hugging Face id, '' for local builds.")
    target_modules: list[str] = Field(default_factory=list, description="LoRA targets; [] = inferred at training.")
    chat_template: str | None = None
    end_of_turn: str | None = None
    pretraining: dict = Field(default_factory=dict, description="For `tiny`: its pre-training report.")

    @classmethod
    def from_resolved(cls, base: ResolvedBase, pretraining: dict | None = None) -> BaseModelArtifact:
        return cls(name=base.name, path=base.path, hf_id=base.hf_id, target_modules=list(base.target_modules),
                   chat_template=base.chat_template, end_of_turn=base.end_of_turn, pretraining=pretraining or {})

    def resolved(self) -> ResolvedBase:
        return ResolvedBase(self.name, self.path, self.hf_id, tuple(self.target_modules), self.chat_template,
                            self.end_of_turn)


class FineTunedAdapter(Record):
    path: str = Field(description="PEFT adapter directory (method lora/qlora) or full model directory (full), "
                                  "with the tokenizer, loss_history.json and loss_curve.png.")
    method: str
    base: BaseModelArtifact
    dataset_path: str
    global_step: int
    first_train_loss: float | None = None
    last_train_loss: float | None = None
    best_eval_loss: float | None = None
    trainable_parameters: int = 0
    content_hash: str = ""
    run_id: str = ""
    warm_start_from: str = Field("", description="Final directory of the accepted run this one continued; '' = "
                                                 "trained from the base.")


class EvaluationReport(Record):
    path: str = Field(description="Directory with evaluation.md, evaluation.png and evaluation.json.")
    markdown: str
    metrics: dict = Field(description="base / fine_tuned / previous summaries: overall, by_task, by_language.")
    fine_tuned_better: bool
    accepted: bool = Field(description="Passed the quality gate (or the gate is off): merge and export may follow.")
    gate_reason: str = ""
    adapter_path: str = Field("", description="The fine-tuned model this report judged.")


    def rejection(self) -> str:
        """What a merge or export of a rejected model says instead (the record's own verdict: it holds even when the
        run history that holds the check's result is gone)."""
        return (f"The quality gate rejected the fine-tuned model: {self.gate_reason}. Nothing is merged or exported; "
                "the model exported before stays in place. Change the training settings or the data and run again "
                "(or set training.quality_gate: false to export anyway).")


class AcceptedModel(Record):
    """The last fine-tuned model that passed the quality gate: what retraining continues and must beat."""

    adapter_path: str
    method: str
    run_id: str
    perplexity: float | None = None


class MergedModel(Record):
    path: str = Field(description="Standalone checkpoint: safetensors, tokenizer, README.md model card.")
    base_name: str
    method: str
    content_hash: str = ""
