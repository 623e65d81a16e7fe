"""Settings of the preprocessing layer (``chunking`` and ``dedup`` sections of mochi.yaml)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from mochi_pipeline.settings_base import Section


class ChunkStrategy(StrEnum):
    FUNCTION = "function"
    CLASS = "class"
    FILE = "file"
    SLIDING_WINDOW = "sliding_window"


class ChunkingSettings(Section):
    strategy: ChunkStrategy = Field(ChunkStrategy.FUNCTION, description="function, class, file or sliding_window.")
    max_tokens: int = Field(512, ge=16, description="Token budget of one chunk.")
    min_tokens: int = Field(24, ge=0, description="Sibling definitions smaller than this are merged.")
    window_tokens: int = Field(256, ge=16, description="Window size for the sliding_window strategy and fallback.")
    overlap_tokens: int = Field(32, ge=0, description="Overlap between consecutive windows.")
    exclude_languages: list[str] = Field(
        default_factory=lambda: ["text", "json"],
        description="Languages never cut into code chunks (documentation formats never are; they become doc sections).",
    )

    @model_validator(mode="after")
    def _check(self) -> ChunkingSettings:
        if self.overlap_tokens >= self.window_tokens:
            raise ValueError("overlap_tokens must be smaller than window_tokens")
        if self.min_tokens >= self.max_tokens:
            raise ValueError("min_tokens must be smaller than max_tokens")
        return self


class DedupSettings(Section):
    ngram: int = Field(5, ge=1, description="Word n-gram size of the MinHash shingles (The Stack: 5).")
    num_perm: int = Field(256, ge=16, description="MinHash permutations (The Stack: 256).")
    threshold: float = Field(
        0.7, gt=0.0, le=1.0, description="Jaccard similarity above which two chunks are near duplicates."
    )
    seed: int = Field(1, description="MinHash seed.")
