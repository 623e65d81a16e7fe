"""Fill-in-the-middle in the base model's own format.

The dataset keeps FIM examples model-agnostic (``prefix``, ``response`` = the middle, ``suffix``);
they are laid out here with the sentinel tokens the base model's tokenizer already has, the same
tokens llama.cpp finds in the exported GGUF and ``mochi serve``'s ``/infill`` sends. A base
without FIM tokens (Phi-3, Gemma base) gets no FIM examples: new, untrained sentinels would teach
nothing the server could use (``training.fim``).
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class FimTokens:
    prefix: str
    suffix: str
    middle: str

    def prompt(self, prefix: str, suffix: str, spm: bool = False) -> str:
        """Everything before the middle: PSM, or SPM (StarCoder / FIM paper variant 2) with ``spm``."""
        if spm:
            return f"{self.prefix}{self.suffix}{suffix}{self.middle}{prefix}"
        return f"{self.prefix}{prefix}{self.suffix}{suffix}{self.middle}"


# The sentinels of the code model families, in the order tried (llama.cpp recognises the same texts).
KNOWN_FIM_TOKENS = (
    FimTokens("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),  # Qwen2.5-Coder, CodeGemma
    FimTokens("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),  # StarCoder, SantaCoder, the `tiny` base
    FimTokens("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),  # DeepSeek-Coder
    FimTokens("<fim-prefix>", "<fim-suffix>", "<fim-middle>"),  # Refact, CodeShell
)
STARCODER_FIM = KNOWN_FIM_TOKENS[1]


def fim_tokens(tokenizer: PreTrainedTokenizerBase) -> FimTokens | None:
    """The FIM sentinels this tokenizer has as single tokens, or None."""
    vocab = tokenizer.get_vocab()
    for tokens in KNOWN_FIM_TOKENS:
        if all(t in vocab for t in (tokens.prefix, tokens.suffix, tokens.middle)):
            return tokens
    return None


def is_fim_task(task: str) -> bool:
    return task in ("fim_psm", "fim_spm")
