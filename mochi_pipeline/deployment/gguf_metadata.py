"""Read what a GGUF file says about its tokenizer and chat format (vocabulary only, no weights)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GGUFChatInfo:
    architecture: str
    name: str
    chat_template: str | None
    bos_token: str | None
    eos_token: str | None
    eos_token_id: int | None
    eot_token: str | None  # end-of-turn token when the model has one distinct from eos (Llama-3, Gemma)
    add_bos_token: bool


def read_chat_info(path: str | Path) -> GGUFChatInfo:
    """Loads just the vocabulary with the llama.cpp runtime (Python GGUF readers are slow on 100k-token vocabs)."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        vocab = llama_cpp.llama_model_get_vocab(llm.model)

        def text(token: int) -> str | None:
            return llama_cpp.llama_vocab_get_text(vocab, token).decode("utf-8") if token >= 0 else None

        eos, eot = llama_cpp.llama_vocab_eos(vocab), llama_cpp.llama_vocab_eot(vocab)
        meta = llm.metadata
        return GGUFChatInfo(
            architecture=meta.get("general.architecture", ""),
            name=meta.get("general.name", Path(path).stem),
            chat_template=meta.get("tokenizer.chat_template"),
            bos_token=text(llama_cpp.llama_vocab_bos(vocab)),
            eos_token=text(eos),
            eos_token_id=eos if eos >= 0 else None,
            eot_token=text(eot) if eot != eos else None,
            add_bos_token=bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
        )
    finally:
        llm.close()
