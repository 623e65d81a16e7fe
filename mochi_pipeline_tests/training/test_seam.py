"""The seam between a masked prompt and its trained answer is a token boundary: every row of a demo dataset
(the data layers run on the sample repository), for each family mochi ships (tokenizer and chat template).

Tokenized together, prompt and answer merge across the seam for some rows (StarCoder's vocabulary joins
``### Response\\n`` with the indentation that follows, Qwen2's ``assistant\\n`` with an answer's leading
newline), so a mask placed after the prompt's own tokens would cut through a token; TRL warned "The
tokenized prompt is not a prefix of the tokenized prompt+completion". The trainer now gets ids made apart.
"""

from __future__ import annotations

import logging

import datasets
import pytest

from mochi_pipeline.io_manager import read_asset_file
from mochi_pipeline.training import base_models
from mochi_pipeline.training.lora_config import sft_config
from mochi_pipeline.training.sft_data import Formatter, load_dataset_dict
from mochi_pipeline_tests.family_models import FAMILIES, family_model_dir, resolved_base
from mochi_pipeline_tests.materialize import DATA_ASSETS, materialize, project_config
from mochi_pipeline_tests.training.store_project import fast_settings

pytestmark = pytest.mark.slow  # builds each family's stand-in model once (cached across sessions)


@pytest.fixture(scope="module")
def demo_rows(sample_repo, tmp_path_factory) -> list[dict]:
    """Every row (train and eval) of training_dataset as `mochi run` builds it on the sample repository."""
    tmp = tmp_path_factory.mktemp("seam")
    cfg = project_config(tmp, repo={"source": str(sample_repo)})
    assert materialize(cfg, DATA_ASSETS).success
    data = load_dataset_dict(read_asset_file(cfg.artifacts_path / "assets" / "training_dataset.json"))
    return [*data["train"], *data["eval"]]


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    fam = FAMILIES[request.param]
    base = resolved_base(fam, family_model_dir(fam.name))
    tokenizer = base_models.load_tokenizer(base)
    return fam.name, tokenizer, Formatter.for_base(base, tokenizer, "native")


def inference_prompt_ids(tokenizer, prompt: str) -> list[int]:
    """``prompt`` tokenized alone, as a server does, with one BOS where the template writes one and the
    tokenizer adds its own."""
    ids = tokenizer(prompt)["input_ids"]
    return ids[1:] if ids[:2] == [tokenizer.bos_token_id] * 2 else ids


def test_no_row_has_a_merged_seam(demo_rows, family):
    name, tokenizer, formatter = family
    rows = [r for r in demo_rows if formatter.usable(r)]
    chat_rows = merged_together = 0
    for row in rows:
        prompt, completion = formatter.training_pair(row)
        ids, start = formatter.training_ids(row)
        assert ids[:start] == inference_prompt_ids(tokenizer, prompt), (name, row["id"])
        answer = ids[start:]
        assert answer[-1] == tokenizer.eos_token_id
        if answer[:-1] and not completion.endswith(tokenizer.eos_token):
            answer = answer[:-1]
        # The ids read as the same text as prompt and answer tokenized together: only the seam may differ.
        together = inference_prompt_ids(tokenizer, prompt + completion)
        assert tokenizer.decode(ids[:start] + answer) == tokenizer.decode(together), (name, row["id"])
        if prompt:
            chat_rows += 1
            alone = inference_prompt_ids(tokenizer, prompt)
            merged_together += together[:len(alone)] != alone
    assert chat_rows > 50, "the demo dataset should have many prompt/answer rows"
    if name in ("llama", "qwen2"):  # the dataset does have rows whose seam merges when tokenized together
        assert merged_together > 0


def test_trl_sees_the_mask_as_given_and_does_not_warn(demo_rows, family, tmp_path, caplog):
    from trl import SFTTrainer

    name, tokenizer, formatter = family
    settings = fast_settings(max_seq_length=4096, packing=False)
    rows = formatter.to_token_rows(datasets.Dataset.from_list(demo_rows), settings.max_seq_length)
    trainer = SFTTrainer.__new__(SFTTrainer)  # only its dataset preparation, without a model
    trainer.completion_only_loss, trainer._tokenizer = True, tokenizer
    with caplog.at_level(logging.WARNING):
        prepared = SFTTrainer._prepare_dataset(trainer, rows, tokenizer, sft_config(settings, tmp_path, False),
                                               packing=False, formatting_func=None, dataset_name="train")
    assert "not a prefix" not in caplog.text
    for row, given in zip(prepared, rows, strict=True):
        assert row["input_ids"] == given["input_ids"]
        assert [label != -100 for label in row["labels"]] == [bool(m) for m in given["completion_mask"]]
