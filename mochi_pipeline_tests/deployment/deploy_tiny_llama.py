"""A random-init tiny Llama with the StarCoder tokenizer, plus a LoRA adapter on it.

Built for the deployment tests and the serving benchmark: small enough to convert and run in
seconds, but a real ``LlamaForCausalLM`` that llama.cpp's converter and runtime accept.
"""

from __future__ import annotations

from pathlib import Path

from mochi_pipeline.llama_cpp_vendor import LLAMA_CPP_PYTHON_VERSION, cache_root, vocab_gguf
from mochi_pipeline.storage import build_key, build_once
from mochi_pipeline.training.base_models import PLAIN_TEMPLATE


def load_starcoder_tokenizer():
    from transformers import AutoTokenizer

    vocab = vocab_gguf("starcoder")
    return AutoTokenizer.from_pretrained(str(vocab.parent), gguf_file=vocab.name)


def build_tiny_llama(dest: Path, hidden_size: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """Save a random ``LlamaForCausalLM`` (hidden ``hidden_size``) with tokenizer and chat template to ``dest``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_starcoder_tokenizer()
    tokenizer.chat_template = PLAIN_TEMPLATE  # the `tiny` preset's template
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,  # as the `tiny` preset
    )
    model = LlamaForCausalLM(config).eval()  # seeded init (std 0.02)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


def build_lora_adapter(base_dir: Path, dest: Path, rank: int = 4, seed: int = 0) -> Path:
    """Save a PEFT LoRA adapter (q/v projections, non-zero B so it changes outputs) for ``base_dir``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(
        base, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    )
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.05)
    peft_model.save_pretrained(dest)
    return dest


def cached_tiny_llama_and_adapter() -> tuple[Path, Path]:
    """The tiny model and a LoRA adapter on it, built once per key under the mochi cache (tokenizer loading is
    slow); the key covers this file's code, the template and the library versions, so a change rebuilds them."""
    import peft
    import torch
    import transformers

    key = build_key([__file__], PLAIN_TEMPLATE, LLAMA_CPP_PYTHON_VERSION, torch.__version__, transformers.__version__,
                    peft.__version__)

    def build(tmp: Path) -> None:
        build_tiny_llama(tmp / "model")
        build_lora_adapter(tmp / "model", tmp / "adapter")

    root = build_once(cache_root() / "test-models" / f"deploy-tiny-llama-{key}",
                      lambda d: (d / "adapter" / "adapter_config.json").is_file(), build)
    return root / "model", root / "adapter"
