"""Read what a GGUF file says about its tokenizer and chat format (no model weights loaded)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gguf import GGUFReader


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


def _scalar(reader: GGUFReader, key: str):
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def read_chat_info(path: str | Path) -> GGUFChatInfo:
    reader = GGUFReader(str(path))
    tokens = reader.fields["tokenizer.ggml.tokens"]

    def token(key: str) -> str | None:
        idx = _scalar(reader, key)
        return None if idx is None else tokens.contents(int(idx))

    return GGUFChatInfo(
        architecture=str(_scalar(reader, "general.architecture") or ""),
        name=str(_scalar(reader, "general.name") or Path(path).stem),
        chat_template=_scalar(reader, "tokenizer.chat_template"),
        bos_token=token("tokenizer.ggml.bos_token_id"),
        eos_token=token("tokenizer.ggml.eos_token_id"),
        eos_token_id=_scalar(reader, "tokenizer.ggml.eos_token_id"),
        eot_token=token("tokenizer.ggml.eot_token_id"),
        add_bos_token=bool(_scalar(reader, "tokenizer.ggml.add_bos_token")),
    )
