"""Settings of the data generation layer (``generation`` section of mochi.yaml)."""

from __future__ import annotations

from pydantic import Field, field_validator

from mochi_pipeline.settings_base import Section

GENERATORS = ("completion_pairs", "doc_code_mapping", "commit_pairs", "qa_generator", "issue_pairs", "ci_fix_pairs")


class QASettings(Section):
    base_url: str = Field(
        "", description="OpenAI-compatible endpoint (e.g. http://localhost:11434/v1); '' = offline generator."
    )
    model: str = Field("", description="Model name sent to the endpoint.")
    api_key_env: str = Field("MOCHI_QA_API_KEY", description="Name of the environment variable holding the API key.")
    timeout_s: float = Field(60.0, gt=0, description="Timeout of one HTTP request, in seconds.")
    max_retries: int = Field(
        4, ge=0, description="Retries of one request on 429, 5xx and timeouts (exponential backoff)."
    )
    concurrency: int = Field(4, ge=1, description="Requests in flight at once.")
    backoff_s: float = Field(
        1.0, ge=0, description="First retry delay; doubles per attempt unless the server sends Retry-After."
    )
    max_backoff_s: float = Field(60.0, ge=0, description="Upper bound of one retry delay (Retry-After included).")
    temperature: float = Field(0.2, ge=0, le=2, description="Sampling temperature sent to the endpoint.")
    max_tokens: int = Field(512, ge=16, description="Reply length limit sent to the endpoint.")
    max_subjects: int = Field(
        500, ge=0, description="At most this many code symbols are asked about (largest docs first)."
    )
    pairs_per_subject: int = Field(3, ge=1, description="Question/answer pairs asked for per symbol.")


class CompletionSettings(Section):
    examples_per_chunk: int = Field(
        4, ge=1, description="Completion examples cut from one chunk (distinct cut points)."
    )
    min_prefix_lines: int = Field(1, ge=1, description="Non-blank lines that must precede a cut point.")
    max_block_lines: int = Field(40, ge=1, description="Longest next-block / FIM middle, in lines.")


class CommitSettings(Section):
    max_diff_lines: int = Field(
        400, ge=1, description="Commits changing more lines than this are dropped (oversize_diff)."
    )
    max_context_chars: int = Field(
        6000, ge=200, description="Diff text shown for a commit-message example; longer diffs are truncated per file."
    )
    min_message_chars: int = Field(8, ge=1, description="Commit subjects shorter than this are trivial and dropped.")
    trivial_messages: list[str] = Field(
        default_factory=lambda: [
            "fix",
            "fixes",
            "fixed",
            "wip",
            "update",
            "updates",
            "updated",
            "typo",
            "typos",
            ".",
            "..",
            "...",
            "minor",
            "cleanup",
            "changes",
            "misc",
            "tmp",
            "temp",
            "test",
            "stuff",
            "refactor",
        ],
        description="Commit subjects (case-insensitive, punctuation ignored) that carry no information.",
    )


class DatasetSettings(Section):
    system_prompt: str = Field(
        "You are a coding assistant that knows this repository.", description="System message of the chat form."
    )
    max_generator_share: dict[str, float] = Field(
        default_factory=dict,
        description="Largest share of the training split one generator may have, e.g. {completion_pairs: 0.6}; "
        "larger generators are downsampled (seeded).",
    )
    decontamination_threshold: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Estimated Jaccard similarity to an eval item above which a training example is dropped.",
    )
    decontamination_ngram: int = Field(5, ge=1, description="Token n-gram size of the decontamination shingles.")
    decontamination_num_perm: int = Field(128, ge=16, description="MinHash permutations used for decontamination.")
    eval_since_tag: str = Field(
        "", description="A tag (e.g. v2.0): every example dated after its commit goes to eval, instead of "
        "generation.eval_time_share's newest sources; the random share still applies. '' = off."
    )

    @field_validator("max_generator_share")
    @classmethod
    def _known_generators(cls, value: dict[str, float]) -> dict[str, float]:
        for name, share in value.items():
            if name not in GENERATORS:
                raise ValueError(f"unknown generator {name!r}; known: {', '.join(GENERATORS)}")
            if not 0 < share <= 1:
                raise ValueError(f"share of {name} must be in (0, 1], got {share}")
        return value


class TrackerPairSettings(Section):
    """Examples from issue threads and CI failures (see data_generation/tracker_pairs.py)."""

    max_diff_chars: int = Field(
        6000, ge=200, description="Diff text of one change in a response; longer diffs are cut per file (each file "
        "an equal share), files that no longer fit are named."
    )
    max_thread_chars: int = Field(
        6000, ge=200, description="Thread text (title, body, discussion) of one example; later comments that no "
        "longer fit are left out and counted in the text."
    )
    max_log_chars: int = Field(4000, ge=200, description="CI log excerpt of one example; longer ones keep their end "
                               "(where the error is).")
    min_answer_chars: int = Field(40, ge=1, description="Accepted answers shorter than this are skipped "
                                  "(short_answer).")
    max_commits: int = Field(5, ge=1, description="Issues closed by more commits than this are skipped "
                             "(too_many_commits): the change is spread out, not one fix.")
    pr_changes: bool = Field(True, description="Also turn each merged pull/merge request (description and review "
                             "discussion) into an example whose response is its merge commit's change.")


class GenerationSettings(Section):
    seed: int = Field(0, description="Seed of every random choice in data generation.")
    fim_rate: float = Field(
        0.5, ge=0.0, le=1.0, description="Share of completion examples turned into fill-in-the-middle (Refact: 0.9)."
    )
    spm_rate: float = Field(0.5, ge=0.0, le=1.0, description="Share of FIM examples in SPM rather than PSM order.")
    eval_time_share: float = Field(
        0.1, ge=0.0, lt=1.0, description="Share of newest files/commits held out for evaluation."
    )
    eval_random_share: float = Field(0.02, ge=0.0, lt=1.0, description="Extra random share held out for evaluation.")
    qa: QASettings = Field(default_factory=QASettings)
    completion: CompletionSettings = Field(default_factory=CompletionSettings)
    commits: CommitSettings = Field(default_factory=CommitSettings)
    dataset: DatasetSettings = Field(default_factory=DatasetSettings)
    trackers: TrackerPairSettings = Field(default_factory=TrackerPairSettings)
