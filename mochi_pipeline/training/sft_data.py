"""From ``training_dataset`` rows to what the trainer and the evaluation feed the model.

Three kinds of rows (see data_generation/dataset_builder.py):
- next line / next block: trained as plain causal LM on the row's raw ``text`` (loss on every
  token), like the code models were pre-trained;
- fill-in-the-middle: the row's ``prefix``, ``suffix`` and middle (``response``) laid out with the
  base model's own FIM tokens (``fim.py``), also as plain causal LM; left out when it has none;
- everything else (explain, implement, commit messages, Q&A): the chat ``messages`` rendered with
  the base model's chat template; the prompt is masked and only the assistant answer carries loss.
All three become token ids with a completion mask (an empty prompt for raw text), so one dataset mixes
them. The seam between prompt and answer is always a token boundary (``encode_pair``): tokenized
together, a BPE vocabulary can merge the prompt's last characters with the answer's first ones into one
token (after ``### Response\n``, an answer indented by four spaces starts with one token for the newline
and three of the spaces in StarCoder's vocabulary), and a mask after the prompt's own tokens would cut
through it. The prompt's ids are exactly those the model is given at inference, and evaluation scores
the same ids training learnt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from transformers import PreTrainedTokenizerBase

from mochi_pipeline.training import base_models
from mochi_pipeline.training.base_models import ResolvedBase
from mochi_pipeline.training.fim import FimTokens, fim_tokens, is_fim_task

SPLITS = ("train", "eval")


class DatasetError(ValueError):
    """The training dataset is missing or malformed; the message says what to do."""


def is_raw_task(task: str) -> bool:
    return is_fim_task(task) or task in ("next_line", "next_block")


def dataset_dir(artifact: Any) -> Path:
    """The ``save_to_disk`` directory of a ``training_dataset`` record (or of a plain path)."""
    if isinstance(artifact, str | Path):
        candidates = [Path(artifact)]
    else:
        candidates = [Path(p) for p in (getattr(artifact, "hf_path", ""), getattr(artifact, "path", "")) if p]
    for path in candidates:
        for d in (path, path / "hf"):
            if (d / "dataset_dict.json").is_file():
                return d
    raise DatasetError(
        f"No saved DatasetDict (dataset_dict.json) at {', '.join(map(str, candidates)) or '(no path)'}; "
        "materialize training_dataset first."
    )


def load_dataset_dict(artifact: Any) -> datasets.DatasetDict:
    dd = datasets.load_from_disk(str(dataset_dir(artifact)))
    if len(dd.get("train") or []) == 0:
        raise DatasetError("training_dataset has no training examples; check the data_generation metadata.")
    if "eval" not in dd:  # an empty split is not saved
        dd["eval"] = dd["train"].select([])
    return dd


def row_text(row: dict) -> str:
    return row.get("text") or row.get("raw_text") or ""


def leading_bos(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The BOS id the tokenizer puts before a text by itself (``[]`` for tokenizers that add none)."""
    bos = tokenizer.bos_token_id
    return [bos] if bos is not None and tokenizer("x")["input_ids"][:1] == [bos] else []


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    # No length warning: rows may be longer than the model reads; ``fit_to_length`` cuts them.
    return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] if text else []


def encode_pair(tokenizer: PreTrainedTokenizerBase, prompt: str, completion: str,
                add_eos: bool = False) -> tuple[list[int], int]:
    """Token ids of ``prompt`` then ``completion`` and the prompt's length in ids, the seam on a token boundary.

    The prompt's ids are those it has on its own, as at inference, with the tokenizer's BOS once (also when
    the template writes it, as Phi-3's ``{{ bos_token }}`` does; tokenized together with the tokenizer's own
    BOS, such a prompt had two). The answer's ids are what follows them when both are tokenized together,
    the same ids the text has as a whole; where a token would straddle the seam, the answer is tokenized on
    its own instead. ``add_eos`` ends the ids with EOS unless the answer already does, as TRL does for text
    it tokenizes itself.
    """
    bos = leading_bos(tokenizer)
    text = prompt.removeprefix(tokenizer.bos_token) if bos and tokenizer.bos_token else prompt
    head = bos + _ids(tokenizer, text)
    together = bos + _ids(tokenizer, text + completion)
    tail = together[len(head):] if together[:len(head)] == head else _ids(tokenizer, completion)
    if add_eos and tokenizer.eos_token_id is not None and tail[-1:] != [tokenizer.eos_token_id]:
        tail = [*tail, tokenizer.eos_token_id]
    return head + tail, len(head)


def fit_to_length(ids: list[int], start: int, max_len: int, head: int = 0) -> tuple[list[int], int]:
    """``ids`` (the answer from ``start``) cut to ``max_len`` so that some of the answer is always kept.

    The prompt loses its beginning (what sits next to the answer matters most) down to half the budget,
    all but its first ``head`` ids (the BOS: Gemma without it reads far out of distribution);
    an answer longer than the rest loses its end. Training and evaluation use the same cut, so a long prompt
    never leaves a row with nothing to learn or score (cut from the end, as the trainer would, it did: on
    pallets/click 43% of the eval rows, and an eval batch of such rows has a NaN loss).
    """
    if len(ids) <= max_len:
        return ids, start
    prompt, answer = ids[:start], ids[start:]
    keep = min(len(prompt), max(max_len - len(answer), max_len // 2))
    head = min(head, keep)
    return prompt[:head] + prompt[len(prompt) - keep + head:] + answer[:max_len - keep], keep


@dataclass(frozen=True)
class Formatter:
    """Renders a dataset row as (prompt, completion) with one tokenizer's chat template."""

    tokenizer: PreTrainedTokenizerBase
    end_of_turn: str
    fim: FimTokens | None  # None: FIM rows are not used (see ``usable``)

    @classmethod
    def for_base(cls, base: ResolvedBase, tokenizer: PreTrainedTokenizerBase, fim: str) -> Formatter:
        """The formatter training and evaluation use (``fim``: training.fim, native or off)."""
        native = fim_tokens(tokenizer) if fim == "native" else None
        return cls(tokenizer, base_models.end_of_turn(base, tokenizer), native)

    def fim_note(self, split: datasets.Dataset, base_name: str) -> str:
        """Why FIM rows of ``split`` are left out ('' when none are)."""
        left_out = sum(1 for task in split["task"] if is_fim_task(task)) if self.fim is None else 0
        if not left_out:
            return ""
        if fim_tokens(self.tokenizer) is None:
            return (f"{left_out} fill-in-the-middle examples left out: {base_name}'s tokenizer has no FIM tokens "
                    "(generation.fim_rate: 0 stops making them).")
        return f"{left_out} fill-in-the-middle examples left out (training.fim: off)."

    def usable(self, row: dict) -> bool:
        return self.fim is not None or not is_fim_task(row["task"])

    def fim_prompt(self, row: dict) -> str:
        if self.fim is None:
            raise DatasetError(f"Row {row.get('id', '?')} is a FIM example but the base model has no FIM tokens.")
        return self.fim.prompt(row["prefix"], row["suffix"], spm=row["task"] == "fim_spm")

    def chat_messages(self, row: dict) -> list[dict[str, str]]:
        messages = row.get("messages") or []
        if messages and messages[-1]["role"] == "assistant":
            return [dict(m) for m in messages]
        user = f"{row['instruction']}\n\n{row['context']}".rstrip() if row.get("context") else row["instruction"]
        return [{"role": "user", "content": user}, {"role": "assistant", "content": row["response"]}]

    def training_pair(self, row: dict) -> tuple[str, str]:
        """What is trained: raw text as a whole, or chat prompt (masked) + answer."""
        if is_fim_task(row["task"]):
            return "", self.fim_prompt(row) + row["response"]
        if is_raw_task(row["task"]) and row_text(row):
            return "", row_text(row)
        messages = self.chat_messages(row)
        prompt = self.tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
        return prompt, messages[-1]["content"] + self.end_of_turn

    def scoring_pair(self, row: dict) -> tuple[str, str]:
        """What is scored at evaluation: the context a user gives, and the answer expected back."""
        if is_fim_task(row["task"]):
            return self.fim_prompt(row), row["response"]
        text = row_text(row)
        if is_raw_task(row["task"]) and text and row["response"] and text.endswith(row["response"]):
            return text[: len(text) - len(row["response"])], row["response"]
        return self.training_pair(row)

    def training_ids(self, row: dict) -> tuple[list[int], int]:
        """The ids trained on (ending with EOS) and where the answer starts (after at most a BOS for raw text)."""
        return encode_pair(self.tokenizer, *self.training_pair(row), add_eos=True)

    def to_token_rows(self, split: datasets.Dataset, max_len: int) -> datasets.Dataset:
        """TRL's pre-tokenized rows of at most ``max_len`` ids (``fit_to_length``): ``input_ids`` and
        ``completion_mask`` (1 where the loss applies).

        TRL builds the labels from the mask (``completion_only_loss``) and packs; it tokenizes nothing
        itself, so it never re-splits the seam, and has nothing left to truncate.
        """
        # Built in memory: mapping a dataset loaded from disk would write cache files into the
        # data_generation layer's artifact directory.
        head = len(leading_bos(self.tokenizer))
        encoded = [fit_to_length(*self.training_ids(row), max_len, head) for row in split if self.usable(row)]
        return datasets.Dataset.from_dict({
            "input_ids": [ids for ids, _ in encoded],
            "completion_mask": [[0] * start + [1] * (len(ids) - start) for ids, start in encoded],
        })
