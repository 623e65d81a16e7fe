"""A Hugging Face (Jinja) chat template, taken apart into per-role wrappers.

Ollama wants a Go template, llama.cpp's server a prompt string; both are built from the same
pieces: what goes before and after each role's content. The pieces are found by rendering the
Jinja template with marker messages (so any template of the usual "wrap each turn" shape works:
the `tiny` preset's plain markers, ChatML/Qwen, Phi-3, Gemma, Llama-3, Zephyr), then checked by
re-assembling whole conversations and comparing them with the Jinja rendering.
"""

from __future__ import annotations

from dataclasses import dataclass

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

_USER, _USER2, _ASSISTANT, _SYSTEM = "MOCHIUSERMARKER1", "MOCHIUSERMARKER2", "MOCHIASSISTANTMARKER", "MOCHISYSMARKER"


class ChatTemplateError(ValueError):
    """The chat template cannot be expressed as per-role wrappers (or cannot be rendered at all)."""


def render_jinja(template: str, messages: list[dict[str, str]], add_generation_prompt: bool,
                 bos_token: str = "", eos_token: str = "") -> str:
    """Render like ``transformers``' ``apply_chat_template`` (same Jinja settings and helpers)."""

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=add_generation_prompt, bos_token=bos_token, eos_token=eos_token,
    )


@dataclass(frozen=True)
class ChatWrappers:
    """Literal text around each turn. ``open_*`` replaces ``user_prefix`` on the first user turn."""

    open_no_system: str  # first user turn without a system prompt (e.g. a default system block + user prefix)
    open_system_before: str | None  # first user turn with a system prompt: before it ... (None: no system role)
    open_system_after: str | None  # ... and after it, up to the user content
    user_prefix: str
    user_suffix: str
    assistant_prefix: str
    assistant_suffix: str
    generation_prompt: str

    @property
    def stop_strings(self) -> list[str]:
        """Text that ends an assistant turn (the stripped assistant suffix), when there is any."""
        end = self.assistant_suffix.strip()
        return [end] if end else []

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The prompt these wrappers give (what the generated Ollama template renders)."""
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        out: list[str] = []
        first = True
        for m in messages:
            if m["role"] == "user":
                if first and system and self.open_system_before is not None:
                    out.append(f"{self.open_system_before}{system}{self.open_system_after}")
                elif first and system:  # no system role in the template: put it in front of the first turn
                    out.append(f"{self.open_no_system}{system}\n\n")
                elif first:
                    out.append(self.open_no_system)
                else:
                    out.append(self.user_prefix)
                out.append(m["content"] + self.user_suffix)
                first = False
            elif m["role"] == "assistant":
                out.append(self.assistant_prefix + m["content"] + self.assistant_suffix)
        if add_generation_prompt:
            out.append(self.generation_prompt)
        return "".join(out)


def _split(text: str, marker: str, what: str) -> tuple[str, str]:
    if text.count(marker) != 1:
        raise ChatTemplateError(f"The chat template does not show the {what} content exactly once; it may rewrite it.")
    before, _, after = text.partition(marker)
    return before, after


def _strip_prefix(text: str, prefix: str, what: str) -> str:
    if not text.startswith(prefix):
        raise ChatTemplateError(f"The chat template's {what} is not a fixed wrapper (got {text!r}).")
    return text[len(prefix):]


def parse_chat_template(template: str, bos_token: str = "", eos_token: str = "") -> ChatWrappers:
    """Find each role's wrappers in ``template`` and check them on multi-turn conversations."""

    def jinja(messages: list[dict[str, str]], gen: bool) -> str:
        try:
            text = render_jinja(template, messages, gen, bos_token=bos_token, eos_token=eos_token)
        except TemplateError as err:
            raise ChatTemplateError(f"The chat template failed to render: {err}") from None
        # llama.cpp and Ollama add the BOS token themselves; keep it out of the text.
        return text[len(bos_token):] if bos_token and text.startswith(bos_token) else text

    # Some templates (Phi-3) end a conversation rendered without a generation prompt with the eos
    # token; that closing text is not part of any turn, so it is dropped before taking turns apart.
    probe = [{"role": "user", "content": _USER}]
    closing = ""
    if eos_token and not jinja(probe, True).startswith(jinja(probe, False)) and jinja(probe, False).endswith(eos_token):
        closing = eos_token

    def render(messages: list[dict[str, str]], gen: bool) -> str:
        text = jinja(messages, gen)
        return text[: -len(closing)] if closing and not gen and text.endswith(closing) else text

    user, assistant, user2 = ({"role": "user", "content": _USER}, {"role": "assistant", "content": _ASSISTANT},
                              {"role": "user", "content": _USER2})
    one = render([user], False)
    open_no_system, user_suffix = _split(one, _USER, "user")
    generation_prompt = _strip_prefix(render([user], True), one, "generation prompt")
    pair = render([user, assistant], False)
    mid, assistant_suffix = _split(_strip_prefix(pair, open_no_system + _USER, "first user turn"), _ASSISTANT,
                                   "assistant")
    assistant_prefix = _strip_prefix(mid, user_suffix, "assistant prefix")
    three = render([user, assistant, user2], False)
    after_assistant = _strip_prefix(three, pair, "second user turn")
    user_prefix, tail = _split(after_assistant, _USER2, "second user")
    if tail != user_suffix:
        raise ChatTemplateError("The chat template closes the second user turn differently from the first.")

    open_system_before = open_system_after = None
    try:
        with_system = render([{"role": "system", "content": _SYSTEM}, user], False)
    except ChatTemplateError:
        with_system = None  # e.g. Gemma 2 raises on a system message
    if with_system is not None and _SYSTEM in with_system:
        head, _ = _split(with_system, _USER, "user (after a system message)")
        open_system_before, open_system_after = _split(head, _SYSTEM, "system")

    wrappers = ChatWrappers(open_no_system, open_system_before, open_system_after, user_prefix, user_suffix,
                            assistant_prefix, assistant_suffix, generation_prompt)
    _check(wrappers, render)
    return wrappers


def _check(wrappers: ChatWrappers, render) -> None:
    """Re-assemble conversations from the wrappers; they must match the Jinja rendering exactly."""
    conversations = [
        [{"role": "user", "content": "Hi"}],
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
    ]
    if wrappers.open_system_before is not None:
        conversations.append([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "x"},
                              {"role": "assistant", "content": "y"}, {"role": "user", "content": "z"}])
    for messages in conversations:
        expected = render(messages, True)
        got = wrappers.render(messages, True)
        if got != expected:
            raise ChatTemplateError(
                "The chat template is not a plain per-role wrapper template (it depends on position or content), "
                f"so it cannot be translated automatically: Jinja gives {expected!r}, the wrappers {got!r}. "
                "Set export.ollama_template in mochi.yaml to a hand-written Ollama TEMPLATE."
            )
