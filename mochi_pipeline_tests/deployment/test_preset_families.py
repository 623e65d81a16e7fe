"""Every base-model family end to end, offline: load → LoRA training → merge → GGUF → llama.cpp → Ollama → server.

Each family's stand-in (family_models.py) is a tiny random model of the family's own transformers class with
the family's real tokenizer. Expected values come from transformers (its chat template rendering, its
tokenizer, its logits and greedy continuation) or from the family's known token texts, never from mochi.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import gguf
import httpx
import llama_cpp
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from mochi_pipeline.deployment.exporter import write_modelfile
from mochi_pipeline.deployment.gguf_export import GGUFExport, export_gguf
from mochi_pipeline.deployment.gguf_metadata import read_chat_info
from mochi_pipeline.deployment.gguf_verify import VerificationReport, verify_export
from mochi_pipeline.deployment.ollama import OllamaModelfile
from mochi_pipeline.deployment.server import ModelServer, create_app
from mochi_pipeline.deployment.settings import ExportSettings
from mochi_pipeline.llama_cpp_vendor import vocab_gguf
from mochi_pipeline.training import base_models
from mochi_pipeline.training.fim import fim_tokens
from mochi_pipeline.training.merge import merge
from mochi_pipeline.training.sft_data import load_dataset_dict
from mochi_pipeline.training.trainer import TrainingResult, train
from mochi_pipeline_tests.deployment.served_app import Running
from mochi_pipeline_tests.family_models import FAMILIES, FIM_ROLES, Family, family_model_dir, resolved_base
from mochi_pipeline_tests.training.store_project import fast_settings, make_store_dataset

pytestmark = pytest.mark.slow

GGUF_ARCHITECTURE = {"llama": "llama", "qwen2": "qwen2", "phi3": "phi3", "gemma4": "gemma4"}
SYSTEM = {"role": "system", "content": "You are a coding assistant for this project."}
CONVERSATIONS = [
    [{"role": "user", "content": "What does get_order return?"}],
    [{"role": "user", "content": "Name the ledger call."}, {"role": "assistant", "content": "ledger.fetch"},
     {"role": "user", "content": "And to delete?"}],
]
PROMPT = "def delete_order(self, order_id: int) -> None:\n"
# Random weights leave the top tokens nearly tied: q8_0 rounding itself (applied in torch, without llama.cpp)
# keeps transformers' top-1 token at only ~90% of the positions for the Gemma 4 stand-in (262k tokens).
Q8_TOP1 = 0.85
# Gemma 4 in ggml: besides the f16-table GELU (emulated in the reference, gguf_verify.llama_cpp_gelu), the
# soft-capped logits and the proportional RoPE of the global layer leave up to ~3e-4 in f32 (measured 2.8e-4).
F32_MAX_DIFF = {"gemma4": 5e-4}


@dataclass
class Pipeline:
    family: Family
    base: base_models.ResolvedBase
    tokenizer: object  # the tokenizer as training used it (the preset's chat template applied)
    training: TrainingResult
    merged_dir: Path
    gguf: GGUFExport
    report: VerificationReport
    modelfile: OllamaModelfile


@pytest.fixture(scope="module", params=list(FAMILIES))
def pipeline(request, tmp_path_factory) -> Pipeline:
    """One family through mochi's own steps: train (LoRA, 4 steps), merge, export f32 + q8_0, verify, Modelfile."""
    family = FAMILIES[request.param]
    out = tmp_path_factory.mktemp(family.name)
    base = resolved_base(family, family_model_dir(family.name))
    data = load_dataset_dict(make_store_dataset(out / "data"))
    # One row per kind (next line, fill-in-the-middle, chat), the same batch each step: the loss must fall.
    kinds = {}
    for i, task in enumerate(data["train"]["task"]):
        kinds.setdefault(task, i)
    data["train"] = data["train"].select([kinds["next_line"], kinds["fim_psm"], kinds["implement"]])
    data["eval"] = data["eval"].select([])
    settings = fast_settings(max_steps=4, max_seq_length=96, batch_size=3, save_steps=4, eval_steps=4,
                             learning_rate=1e-2)
    result = train(data, base, settings, out / "runs", log=lambda _m: None)
    merged = merge(base, Path(result.output_dir), "lora", out / "merged", "store project", {})
    export = ExportSettings(quantizations=["f32", "q8_0"], min_top1_quantized=Q8_TOP1,  # default name: "mochi"
                            max_logit_diff_f32=F32_MAX_DIFF.get(family.name, 2e-4))
    gguf = export_gguf(merged, out / "gguf", export.quantizations, name=export.name)
    report = verify_export(merged, {f.quantization: Path(f.path) for f in gguf.files}, export.tolerances())
    modelfile = write_modelfile(gguf, out / "gguf", export)
    return Pipeline(family, base, base_models.load_tokenizer(base), result, merged, gguf, report, modelfile)


def _transformers_prompt(tokenizer, messages: list[dict]) -> str:
    """transformers' own rendering, less a leading BOS (llama.cpp and Ollama add that themselves)."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    bos = tokenizer.bos_token or ""
    return text[len(bos):] if bos and text.startswith(bos) else text


def test_tokenizer_has_the_family_tokens(pipeline):
    family, tokenizer = pipeline.family, pipeline.tokenizer
    assert type(AutoModelForCausalLM.from_pretrained(pipeline.base.path)).__name__ == family.model_class
    assert tokenizer.eos_token == family.eos
    for text in {*family.fim.values(), *family.stops}:
        (token_id,) = tokenizer(text, add_special_tokens=False)["input_ids"]  # one token, not pieces
        assert tokenizer.added_tokens_decoder[token_id].special, text
    for token_id, text in family.replace_tokens.items():
        assert tokenizer.convert_tokens_to_ids(text) == token_id
    # mochi's FIM formatting finds the same sentinels (or none)
    found = fim_tokens(tokenizer)
    if family.fim:
        assert (found.prefix, found.suffix, found.middle) == (family.fim["pre"], family.fim["suf"], family.fim["mid"])
    else:
        assert found is None
    # the turn end closes an assistant turn in transformers' rendering of the training template
    pair = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ANSWER"}], tokenize=False)
    assert f"ANSWER{family.turn_end}" in pair
    assert base_models.end_of_turn(pipeline.base, tokenizer) == family.turn_end


def test_lora_training_changed_exactly_the_adapted_weights(pipeline):
    result = pipeline.training
    assert result.global_step == 4 and result.last_train_loss < result.first_train_loss
    adapter = load_file(str(Path(result.output_dir) / "adapter_model.safetensors"))
    b_weights = [t for name, t in adapter.items() if "lora_B" in name]
    assert b_weights and all(t.abs().max() > 0 for t in b_weights)  # PEFT starts B at zero
    before = load_file(str(Path(pipeline.base.path) / "model.safetensors"))
    after = load_file(str(pipeline.merged_dir / "model.safetensors"))
    changed = {name for name, t in after.items() if not torch.equal(t, before[name])}
    targets = set(pipeline.base.target_modules)
    # the adapted projections' weights, and nothing else (their biases, norms, embeddings stay)
    assert changed == {name for name in before if name.endswith(".weight") and name.rsplit(".", 2)[-2] in targets}


def test_gguf_logits_match_transformers(pipeline):
    assert [f.quantization for f in pipeline.gguf.files] == ["f32", "q8_0"]
    assert pipeline.report.passed, pipeline.report.markdown()
    f32 = pipeline.report.checks[0]
    assert f32.quantization == "f32" and f32.tokens_identical and f32.top1_agreement == 1.0


def test_gguf_carries_template_eos_stops_and_fim_tokens(pipeline):
    family, tokenizer = pipeline.family, pipeline.tokenizer
    path = pipeline.gguf.file("q8_0").path
    info = read_chat_info(path)
    assert info.architecture == GGUF_ARCHITECTURE[family.name]
    assert info.chat_template == tokenizer.chat_template  # the template training used
    assert info.eos_token == family.eos
    llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    try:
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        for stop in family.stops:  # llama.cpp ends generation on each of them
            assert llama_cpp.llama_vocab_is_eog(vocab, tokenizer.convert_tokens_to_ids(stop)), stop
        for role in FIM_ROLES:
            got = getattr(llama_cpp, f"llama_vocab_fim_{role}")(vocab)
            want = tokenizer.convert_tokens_to_ids(family.fim[role]) if role in family.fim_in_llama_cpp else -1
            assert got == want, role
    finally:
        llm.close()


def test_gguf_vocabulary_is_the_family_vocabulary(pipeline):
    """Token for token, text and type, the export holds the vocabulary llama.cpp ships for the family."""
    family = pipeline.family

    def vocabulary(path) -> tuple[list[str], list[int]]:
        reader = gguf.GGUFReader(str(path))
        fields = reader.fields
        return fields["tokenizer.ggml.tokens"].contents(), fields["tokenizer.ggml.token_type"].contents()

    (texts, types), (want_texts, want_types) = vocabulary(pipeline.gguf.file("f32").path), vocabulary(
        vocab_gguf(family.vocab))
    assert len(texts) == len(want_texts) == len(pipeline.tokenizer)
    for token_id, text in family.replace_tokens.items():  # Qwen2.5-Coder's tokens, control tokens there
        want_texts[token_id], want_types[token_id] = text, gguf.TokenType.CONTROL
    assert texts == want_texts
    unused = (gguf.TokenType.UNKNOWN, gguf.TokenType.UNUSED)  # Phi-3's [PAD…] placeholders: either way unusable
    assert [(i, t) for i, (t, w) in enumerate(zip(types, want_types, strict=True))
            if t != w and not (t in unused and w in unused and texts[i].startswith("[PAD"))] == []


# --- Ollama's TEMPLATE, run with Go text/template's semantics for the actions mochi writes ---------------

_ACTION = re.compile(r'\{\{(-?)\s*((?:"(?:[^"\\]|\\.)*"|[^"}])*?)\s*(-?)\}\}', re.S)


def _go_template(template: str, messages: list[dict], system: str) -> str:
    """Ollama's prompt for ``messages``: its template values are .Messages (all of them) and .System."""
    items: list[tuple[str, str]] = []  # ("text", s) or ("action", s), with Go's {{- / -}} trimming applied
    pos, trim_next = 0, False
    for m in _ACTION.finditer(template):
        text = template[pos:m.start()]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if m.group(1):
            text = text.rstrip(" \t\r\n")
        items.append(("text", text))
        items.append(("action", m.group(2)))
        trim_next, pos = bool(m.group(3)), m.end()
    tail = template[pos:]
    items.append(("text", tail.lstrip(" \t\r\n") if trim_next else tail))

    def parse(i: int, stop: tuple[str, ...]):
        nodes = []
        while i < len(items):
            kind, body = items[i]
            word = body.split(" ", 1)[0] if kind == "action" else ""
            if kind == "action" and (word in stop or body.startswith("else")):
                return nodes, i
            if kind == "action" and word in ("if", "range"):
                branches, cond = [], body[len(word) + 1:]
                while True:
                    block, i = parse(i + 1, ("end",))
                    branches.append((cond, block))
                    _, closing = items[i]
                    if closing == "end":
                        break
                    cond = closing[len("else if "):] if closing.startswith("else if ") else None
                nodes.append((word, branches))
            else:
                nodes.append((kind, body))
            i += 1
        return nodes, i

    variables: dict[str, object] = {}
    root = {"Messages": messages, "System": system}

    def value(expr: str, dot: dict):
        if expr.startswith('"'):
            return json.loads(expr)
        if expr.startswith("eq "):
            left, right = expr[3:].split(" ", 1)
            return value(left, dot) == value(right, dot)
        if expr in ("true", "false"):
            return expr == "true"
        if expr.startswith("$."):
            return root[expr[2:]]
        if expr.startswith("$"):
            return variables[expr]
        if expr.startswith("."):
            return dot[expr[1:]]
        raise ValueError(f"unsupported Go template expression {expr!r}")

    def run(nodes, dot: dict, out: list[str]) -> None:
        for kind, body in nodes:
            if kind == "text":
                out.append(body)
            elif kind == "range":
                ((expr, block),) = body
                for element in value(expr, dot):
                    run(block, element, out)
            elif kind == "if":
                for cond, block in body:
                    if cond is None or value(cond, dot):
                        run(block, dot, out)
                        break
            elif ":=" in body or " = " in body:
                name, expr = re.split(r"\s*:?=\s*", body, maxsplit=1)
                variables[name] = value(expr, dot)
            else:
                out.append(str(value(body, dot)))

    nodes, _ = parse(0, ())
    out: list[str] = []
    run(nodes, root, out)
    return "".join(out)


def test_go_template_reader_follows_go_semantics():
    template = ('{{- $first := true }}\n{{- range .Messages }}\n{{- if eq .Role "user" }}'
                '{{ if $first }}[{{ $.System }}]{{ else }}|{{ end }}{{ .Content }}{{- $first = false }}\n'
                '{{- else if eq .Role "assistant" }}<{{ .Content }}>{{ end }}\n{{- end }}  \n  {{- "end" }}')
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                {"role": "user", "content": "c"}]
    assert _go_template(template, [{k.capitalize(): v for k, v in m.items()} for m in messages], "S") == "[S]a<b>|cend"


def _modelfile_template(text: str) -> str:
    return re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M).group(1)


def test_modelfile_template_and_stops_match_transformers(pipeline):
    family, tokenizer = pipeline.family, pipeline.tokenizer
    text = Path(pipeline.modelfile.path).read_text(encoding="utf-8")
    template = _modelfile_template(text)
    assert pipeline.modelfile.stop == family.stops
    assert [json.loads(line.split(" ", 2)[2]) for line in text.splitlines() if line.startswith("PARAMETER stop ")] \
        == family.stops
    conversations = list(CONVERSATIONS)
    with_system = [SYSTEM, *CONVERSATIONS[1]]
    if SYSTEM["content"] in tokenizer.apply_chat_template(with_system, tokenize=False):
        conversations.append(with_system)  # (the Phi-3 template has no system role and drops it)
    for messages in conversations:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        go_messages = [{"Role": m["role"], "Content": m["content"]} for m in messages]
        assert _go_template(template, go_messages, system) == _transformers_prompt(tokenizer, messages)


# --- the OpenAI-compatible server over HTTP -----------------------------------------------------------------


@pytest.fixture(scope="module")
def served(pipeline):
    server = ModelServer(pipeline.gguf.file("f32").path, model_id=pipeline.family.name, n_ctx=512, parallel=2)
    with Running(create_app(server)) as url, httpx.Client(base_url=url, timeout=120) as client:
        yield server, client
    server.close()


def test_server_renders_chat_like_transformers_and_answers(pipeline, served):
    server, client = served
    tokenizer = pipeline.tokenizer
    assert server.chat_stops == [pipeline.family.turn_end]
    messages = [SYSTEM, *CONVERSATIONS[1]]
    expected_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert server.tokenize(server.chat_prompt(messages)) == expected_ids
    reply = client.post("/v1/chat/completions", json={"model": pipeline.family.name, "messages": messages,
                                                      "max_tokens": 6, "temperature": 0})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["usage"]["prompt_tokens"] == len(expected_ids)
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert 1 <= body["usage"]["completion_tokens"] <= 6


def test_server_completion_is_the_transformers_greedy_continuation(pipeline, served):
    server, client = served
    reply = client.post("/v1/completions", json={"model": pipeline.family.name, "prompt": PROMPT,
                                                 "max_tokens": 6, "temperature": 0})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    ids = server.tokenize(PROMPT)  # llama.cpp's reading of the prompt (with BOS where the model wants one)
    text_ids = ids[1:] if server.add_bos else ids
    assert text_ids == pipeline.tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(pipeline.merged_dir, dtype=torch.float32).eval()
    seq = list(ids)
    with torch.no_grad():
        for _ in range(body["usage"]["completion_tokens"]):
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))  # transformers, greedy
    assert body["usage"]["prompt_tokens"] == len(ids)
    decode = pipeline.tokenizer.decode
    prompt_text = decode(ids, skip_special_tokens=True)
    assert body["choices"][0]["text"] == decode(seq, skip_special_tokens=True)[len(prompt_text):]
