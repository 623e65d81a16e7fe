"""Settings of the deployment layer (``export`` section of mochi.yaml)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from mochi_pipeline.settings_base import Section

GGUF_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_k_m")


class ExportSettings(Section):
    quantizations: list[str] = Field(
        default_factory=lambda: ["f16", "q8_0"],
        description=f"GGUF types to produce, from {GGUF_TYPES}. q4_k_m is skipped (with the reason in the asset's "
                    "metadata) when the model's widths are not multiples of 256.",
    )
    model_name: str = Field(
        "",
        description="Stem of the exported files and id of the served model; '' = 'mochi'. Letters, digits, '.', "
        "'_' and '-' only: it becomes a file name.",
    )
    lora_outtype: str = Field("f16", pattern="^(f32|f16|bf16|q8_0)$", description="GGUF type of the LoRA adapter.")
    max_logit_diff_f32: float = Field(2e-4, gt=0, description="Max |logit diff| of f32 vs transformers (for "
                                      "logits up to 5; in proportion beyond).")
    max_logit_diff_f16: float = Field(5e-2, gt=0, description="Max |logit diff| of f16 vs transformers (for "
                                      "logits up to 5; in proportion beyond).")
    min_top1_quantized: float = Field(
        0.95, ge=0, le=1, description="Share of positions where q8_0 must pick transformers' top-1 token (or one "
        "transformers scores within 1% of the logit scale of it: a near-tie)."
    )
    ollama_quantization: str = Field("q8_0", description="Which exported GGUF the Ollama Modelfile uses (FROM).")
    system_prompt: str = Field("", description="SYSTEM prompt written into the Ollama Modelfile ('' = none).")
    temperature: float = Field(0.2, ge=0, le=2, description="Default sampling temperature (Modelfile PARAMETER).")
    top_p: float = Field(0.95, gt=0, le=1, description="Default nucleus sampling top_p (Modelfile PARAMETER).")
    num_ctx: int = Field(2048, ge=64, description="Context length Ollama allocates (Modelfile PARAMETER num_ctx).")
    ollama_template: str = Field(
        "", description="Hand-written Ollama TEMPLATE; '' = translated from the model's chat template."
    )
    assist_candidates: int = Field(
        4, ge=2, le=20, description="assist_evaluation: candidates per held-out case (the real change and k-1 from "
        "other commits); chance is 1/k.",
    )
    assist_max_cases: int = Field(40, ge=1, description="assist_evaluation: held-out cases reranked (seeded sample).")
    completion_max_cases: int = Field(
        100, ge=1, description="completion_evaluation: held-out cases per task (next line, fill-in-the-middle), "
        "a seeded sample.",
    )
    host: str = Field("127.0.0.1", description="Address `mochi serve` listens on.")
    port: int = Field(8080, ge=1, le=65535, description="Port `mochi serve` listens on.")
    n_ctx: int = Field(0, ge=0, description="Context length of the served model; 0 = the model's training context.")

    @field_validator("model_name")
    @classmethod
    def _file_name(cls, value: str) -> str:
        if value and (not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", value) or ".." in value):
            raise ValueError("use letters, digits, '.', '_' and '-' (at most 64, no '..' and no '/'): it becomes "
                             "a file name under the artifacts root")
        return value

    @field_validator("quantizations")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        unknown = [q for q in value if q not in GGUF_TYPES]
        if unknown:
            raise ValueError(f"unknown GGUF type(s) {unknown}; choose from {list(GGUF_TYPES)}")
        if not value:
            raise ValueError("list at least one GGUF type, e.g. [f16, q8_0]")
        return value

    @property
    def name(self) -> str:
        return self.model_name or "mochi"

    def tolerances(self) -> dict[str, tuple[float | None, float]]:
        """quantization → (max |logit diff| or None, min top-1 agreement), for gguf_verify."""
        return {
            "f32": (self.max_logit_diff_f32, 1.0),
            "f16": (self.max_logit_diff_f16, 0.98),
            "bf16": (4 * self.max_logit_diff_f16, 0.95),
            "q8_0": (None, self.min_top1_quantized),
            "q4_k_m": (None, 0.8),
        }

    def modelfile_parameters(self) -> dict[str, float | int]:
        return {"temperature": self.temperature, "top_p": self.top_p, "num_ctx": self.num_ctx}
