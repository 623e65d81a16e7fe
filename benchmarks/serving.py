"""Generation speed: the q8_0 GGUF in llama.cpp vs transformers ``generate`` on the same model and prompts.

    .venv/bin/python benchmarks/serving.py [MODEL_DIR] [--new-tokens 64] [--threads N]

Without MODEL_DIR the random tiny Llama of the deployment tests is used (built once, cached).
Both sides decode greedily, the same number of new tokens per prompt, on the same CPU threads.
Target: llama.cpp at least 5x transformers' tokens/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/secrets.py would hide the standard library's `secrets` (numpy imports it): this folder
# comes off the import path before anything imports numpy.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

PROMPTS = (
    "def quicksort(items):\n",
    "class LRUCache:\n    def __init__(self, capacity):\n",
    "# Parse the command line and run the server\nimport argparse\n",
    "async function fetchJson(url) {\n",
)


def transformers_tokens_per_s(model_dir: Path, prompts: list[list[int]], new_tokens: int) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    model.generate(torch.tensor([prompts[0]]), max_new_tokens=4, do_sample=False)  # warm-up
    started = time.perf_counter()
    with torch.inference_mode():
        for ids in prompts:
            out = model.generate(torch.tensor([ids]), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 do_sample=False)
            assert out.shape[1] == len(ids) + new_tokens
    return len(prompts) * new_tokens / (time.perf_counter() - started)


def llama_cpp_tokens_per_s(gguf: Path, prompts: list[list[int]], new_tokens: int, threads: int) -> float:
    from mochi_pipeline.deployment.gguf_verify import load_llama

    llm = load_llama(gguf, n_ctx=512, n_threads=threads, n_threads_batch=threads)
    try:
        def run(ids: list[int], n: int) -> None:
            llm.reset()
            for count, _token in enumerate(llm.generate(ids, top_k=1, reset=True), start=1):
                if count == n:  # a fixed count, like transformers' min_new_tokens: ignore eos
                    break

        run(prompts[0], 4)  # warm-up
        started = time.perf_counter()
        for ids in prompts:
            run(ids, new_tokens)
        return len(prompts) * new_tokens / (time.perf_counter() - started)
    finally:
        llm.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", nargs="?", type=Path, help="Hugging Face model directory (merged model)")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="CPU threads for both (default: all cores; 1 is steadier on a busy machine)")
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    from mochi_pipeline.deployment.gguf_export import convert_hf_to_gguf

    torch.set_num_threads(args.threads)
    model_dir = args.model_dir
    if model_dir is None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "mochi_pipeline_tests" / "deployment"))
        from deploy_tiny_llama import cached_tiny_llama_and_adapter

        model_dir, _ = cached_tiny_llama_and_adapter()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    with tempfile.TemporaryDirectory() as tmp:
        gguf = convert_hf_to_gguf(model_dir, Path(tmp) / "model-q8_0.gguf", "q8_0")
        llama = llama_cpp_tokens_per_s(gguf, prompts, args.new_tokens, args.threads)
    hf = transformers_tokens_per_s(model_dir, prompts, args.new_tokens)
    print(f"model: {model_dir}")
    print(f"{len(PROMPTS)} prompts x {args.new_tokens} new tokens, greedy, {args.threads} threads")
    print(f"transformers generate (fp32):  {hf:8.1f} tokens/s")
    print(f"llama.cpp (q8_0 GGUF):         {llama:8.1f} tokens/s")
    print(f"ratio llama.cpp / transformers: {llama / hf:.1f}x (target >= 5x)")


if __name__ == "__main__":
    main()
