"""Chat templates taken apart into per-role wrappers, and the Ollama Modelfile built from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from mochi_pipeline.deployment.chat_template import ChatTemplateError, parse_chat_template
from mochi_pipeline.deployment.ollama import ModelfileError, build_modelfile, ollama_template
from mochi_pipeline.training.base_models import CHATML_TEMPLATE, GEMMA_TEMPLATE, PLAIN_TEMPLATE

# Qwen2.5-instruct's template (tools branch left out): a default system block when none is given.
QWEN25 = (
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if (message.role == 'user') or (message.role == 'system' and not loop.first)"
    " or (message.role == 'assistant') %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>'"
    " + '\\n' }}{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
PHI3 = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] + "
    "'<|end|>\\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
GEMMA_NO_SYSTEM = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] "
    "| trim + '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)

FAMILIES = {
    "tiny": (PLAIN_TEMPLATE, "<|endoftext|>", "<|endoftext|>", "<|endoftext|>"),
    "chatml": (CHATML_TEMPLATE, "", "<|endoftext|>", "<|im_end|>"),
    "qwen2.5": (QWEN25, "", "<|im_end|>", "<|im_end|>"),
    "phi-3": (PHI3, "<s>", "<|endoftext|>", "<|end|>"),
    "gemma": (GEMMA_TEMPLATE, "<bos>", "<eos>", "<end_of_turn>"),
    "llama-3": (LLAMA3, "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"),
}
CONVERSATION = [
    {"role": "system", "content": "Answer in one line."},
    {"role": "user", "content": "What does mochi do?"},
    {"role": "assistant", "content": "It fine-tunes a model on your repo."},
    {"role": "user", "content": "And then?"},
]


def hf_tokenizer(template: str, bos: str, eos: str):
    """A minimal fast tokenizer carrying ``template``: transformers' own ``apply_chat_template`` renders it."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel({"<unk>": 0}, unk_token="<unk>")),
                                   unk_token="<unk>", bos_token=bos or None, eos_token=eos, chat_template=template)


@pytest.mark.parametrize("family", FAMILIES)
def test_wrappers_reproduce_the_jinja_template(family):
    template, bos, eos, stop = FAMILIES[family]
    wrappers = parse_chat_template(template, bos, eos)
    tokenizer = hf_tokenizer(template, bos, eos)
    for messages in (CONVERSATION, CONVERSATION[1:], CONVERSATION[1:2]):
        expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        assert wrappers.render(messages) == expected.removeprefix(bos)
    assert wrappers.stop_strings == [stop]


def test_model_without_system_role_gets_it_in_the_first_turn():
    wrappers = parse_chat_template(GEMMA_NO_SYSTEM, "<bos>", "<eos>")
    assert wrappers.open_system_before is None
    assert wrappers.render(CONVERSATION[:2]) == (
        "<start_of_turn>user\nAnswer in one line.\n\nWhat does mochi do?<end_of_turn>\n<start_of_turn>model\n"
    )


def test_position_dependent_template_is_refused():
    numbered = "{% for m in messages %}[{{ loop.index }}] {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(ChatTemplateError, match="export.ollama_template"):
        parse_chat_template(numbered)


def test_go_template_quotes_every_literal():
    template = ollama_template(parse_chat_template(CHATML_TEMPLATE, "", "<|endoftext|>"))
    assert '{{ "<|im_start|>system\\n" }}{{ $.System }}{{ "<|im_end|>\\n<|im_start|>user\\n" }}' in template
    assert '{{- .Content }}{{ "<|im_end|>\\n" }}' in template
    assert template.endswith('{{- "<|im_start|>assistant\\n" }}')
    # every raw newline is followed by a trimming action, so layout never leaks into the prompt
    assert all(line.startswith("{{-") for line in template.splitlines()[1:])


@pytest.mark.slow  # the `exported` fixture converts a model to GGUF
def test_modelfile_from_the_materialized_asset(exported):
    result, values = exported
    record = values["ollama_modelfile"]
    path = Path(record.path)
    text = path.read_text(encoding="utf-8")
    assert path.parent == Path(values["gguf_model"].directory)
    assert "FROM ./tiny-q8_0.gguf\n" in text and (path.parent / "tiny-q8_0.gguf").is_file()
    assert 'TEMPLATE """{{- $first := true }}' in text and '{{ "### Instruction\\n" }}' in text
    assert 'SYSTEM """You are terse."""' in text
    assert 'PARAMETER stop "<|endoftext|>"' in text and record.stop == ["<|endoftext|>"]
    assert "PARAMETER temperature 0.2" in text and "PARAMETER num_ctx 2048" in text
    assert record.create_command == f"ollama create tiny -f {path}"


@pytest.mark.slow  # the `exported` fixture converts a model to GGUF
def test_modelfile_refuses_triple_quotes_and_missing_files(exported, tmp_path):
    gguf = Path(exported[1]["gguf_model"].file("q8_0").path)
    with pytest.raises(ModelfileError, match='contains """'):
        build_modelfile(gguf, gguf.parent, system_prompt='say """hi"""')
    with pytest.raises(ModelfileError, match="does not exist"):
        build_modelfile(tmp_path / "missing.gguf", tmp_path)
    assert "FROM " + str(gguf) not in build_modelfile(gguf, tmp_path)  # relative even from elsewhere
