"""Ollama Modelfile for an exported GGUF: FROM, TEMPLATE (from the model's own chat template), stops, SYSTEM.

The TEMPLATE is a Go template built from the per-role wrappers found in the GGUF's
``tokenizer.chat_template`` (see ``chat_template.py``), so what Ollama sends the model is exactly
what ``transformers``' ``apply_chat_template`` gave it in training. Every literal is emitted as a
quoted Go string action, which keeps the whitespace exact whatever the template's layout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import Field

from mochi_pipeline.deployment.chat_template import ChatTemplateError, ChatWrappers, parse_chat_template
from mochi_pipeline.deployment.gguf_metadata import read_chat_info
from mochi_pipeline.records import Record


class ModelfileError(ValueError):
    """The Modelfile cannot be written as asked; the message says what to change."""


class OllamaModelfile(Record):
    path: str = Field(description="The Modelfile")
    gguf_path: str = Field(description="The GGUF file its FROM line names")
    stop: list[str] = Field(default_factory=list, description="PARAMETER stop values")
    create_command: str = Field(description="How to register it with Ollama")


def _lit(text: str) -> str:
    """A Go template action printing ``text`` verbatim ('' when empty)."""
    return "{{ " + json.dumps(text, ensure_ascii=False) + " }}" if text else ""


def ollama_template(w: ChatWrappers) -> str:
    """Go template equivalent of ``w.render(messages, add_generation_prompt=True)``."""
    if w.open_system_before is not None:
        with_system = _lit(w.open_system_before) + "{{ $.System }}" + _lit(w.open_system_after or "")
    else:  # the model has no system role: the system prompt goes in front of the first user turn
        with_system = _lit(w.open_no_system) + "{{ $.System }}" + _lit("\n\n")
    return (
        "{{- $first := true }}\n"
        "{{- range .Messages }}\n"
        '{{- if eq .Role "user" }}\n'
        f"{{{{- if $first }}}}{{{{ if $.System }}}}{with_system}{{{{ else }}}}{_lit(w.open_no_system)}{{{{ end }}}}"
        f"{{{{ else }}}}{_lit(w.user_prefix)}{{{{ end }}}}\n"
        f"{{{{- .Content }}}}{_lit(w.user_suffix)}\n"
        "{{- $first = false }}\n"
        '{{- else if eq .Role "assistant" }}\n'
        f"{{{{- {json.dumps(w.assistant_prefix, ensure_ascii=False)} }}}}{{{{ .Content }}}}{_lit(w.assistant_suffix)}\n"
        "{{- end }}\n"
        "{{- end }}\n"
        f"{{{{- {json.dumps(w.generation_prompt, ensure_ascii=False)} }}}}"
    )


def stop_tokens(w: ChatWrappers | None, eos_token: str | None, eot_token: str | None) -> list[str]:
    stops: list[str] = []
    for s in [*(w.stop_strings if w else []), eot_token, eos_token]:
        if s and s not in stops:
            stops.append(s)
    return stops


def _quoted_block(keyword: str, text: str) -> str:
    if '"""' in text:
        raise ModelfileError(f'The {keyword} text contains """, which a Modelfile cannot quote; remove it.')
    return f'{keyword} """{text}"""'


def build_modelfile(
    gguf_path: Path,
    modelfile_dir: Path,
    system_prompt: str = "",
    parameters: dict[str, float | int] | None = None,
    template_override: str = "",
) -> str:
    """Modelfile text for ``gguf_path``, whose FROM is relative to ``modelfile_dir`` (where it will live)."""
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise ModelfileError(f"GGUF file {gguf_path} does not exist; export the model first (gguf_model asset).")
    info = read_chat_info(gguf_path)
    wrappers: ChatWrappers | None = None
    if template_override:
        template = template_override
    elif info.chat_template:
        try:
            wrappers = parse_chat_template(info.chat_template, info.bos_token or "", info.eos_token or "")
        except ChatTemplateError as err:
            raise ModelfileError(f"{gguf_path.name}: {err}") from None
        template = ollama_template(wrappers)
    else:
        raise ModelfileError(
            f"{gguf_path.name} has no tokenizer.chat_template; give the tokenizer a chat template before export "
            "or set export.ollama_template in mochi.yaml."
        )
    rel = os.path.relpath(gguf_path.resolve(), Path(modelfile_dir).resolve())
    lines = [
        f"# Ollama Modelfile written by mochi for {info.name} ({info.architecture}).",
        f"# Use: ollama create <name> -f {Path(modelfile_dir).name}/Modelfile",
        f"FROM ./{rel}" if not rel.startswith("..") else f"FROM {rel}",
        _quoted_block("TEMPLATE", template),
    ]
    if system_prompt:
        lines.append(_quoted_block("SYSTEM", system_prompt))
    for stop in stop_tokens(wrappers, info.eos_token, info.eot_token):
        lines.append(f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}")
    for key, value in (parameters or {}).items():
        lines.append(f"PARAMETER {key} {value}")
    return "\n".join(lines) + "\n"
