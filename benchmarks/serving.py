"""Generation speed: the q8_0 GGUF in llama.cpp vs transformers ``generate`` on the same model and prompts.

    .venv/bin/python benchmarks/serving.py [MODEL_DIR] [--new-tokens 64] [--threads N]

Without MODEL_DIR the random tiny Llama of the deployment tests is used (built once, cached).
Both sides decode greedily, the same number of new tokens per prompt, on the same CPU threads.
Target: llama.cpp at least 5x transformers' tokens/s.

Then the server itself (`mochi serve`'s app on loopback, real HTTP): aggregate generated tokens/s
with 8 concurrent clients against 1 client, same requests. Target: at least 3x (batched decoding).
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


def http_tokens_per_s(gguf: Path, clients: int, requests_each: int, new_tokens: int, threads: int) -> float:
    """Generated tokens/s of ``clients`` concurrent HTTP clients against the server (``parallel`` = 8 slots),
    each sending ``requests_each`` greedy requests for ``new_tokens`` tokens, one after the other."""
    import concurrent.futures
    import threading

    import httpx
    import uvicorn

    from mochi_pipeline.deployment.server import ModelServer, create_app

    model = ModelServer(gguf, model_id="bench", n_ctx=512, n_threads=threads, parallel=8)
    server = uvicorn.Server(uvicorn.Config(create_app(model), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/v1/completions"

    def client(i: int) -> int:
        done = 0
        with httpx.Client(timeout=300) as http:
            for j in range(requests_each):
                body = {"model": "bench", "prompt": PROMPTS[(i + j) % len(PROMPTS)], "max_tokens": new_tokens,
                        "temperature": 0}
                got = http.post(url, json=body).json()["usage"]["completion_tokens"]
                if got != new_tokens:  # an end-of-text token came first: the rate still counts what was made
                    print(f"  (a request stopped after {got} of {new_tokens} tokens)")
                done += got
        return done

    try:
        client(0)  # warm-up
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            tokens = sum(pool.map(client, range(clients)))
        return tokens / (time.perf_counter() - started)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        model.close()


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
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from mochi_pipeline_tests.deployment.deploy_tiny_llama import cached_tiny_llama_and_adapter

        model_dir, _ = cached_tiny_llama_and_adapter()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    with tempfile.TemporaryDirectory() as tmp:
        gguf = convert_hf_to_gguf(model_dir, Path(tmp) / "model-q8_0.gguf", "q8_0")
        llama = llama_cpp_tokens_per_s(gguf, prompts, args.new_tokens, args.threads)
        one = http_tokens_per_s(gguf, 1, 8, args.new_tokens, args.threads)
        eight = http_tokens_per_s(gguf, 8, 8, args.new_tokens, args.threads)
    hf = transformers_tokens_per_s(model_dir, prompts, args.new_tokens)
    print(f"model: {model_dir}")
    print(f"{len(PROMPTS)} prompts x {args.new_tokens} new tokens, greedy, {args.threads} threads")
    print(f"transformers generate (fp32):  {hf:8.1f} tokens/s")
    print(f"llama.cpp (q8_0 GGUF):         {llama:8.1f} tokens/s")
    print(f"ratio llama.cpp / transformers: {llama / hf:.1f}x (target >= 5x)")
    print(f"server on loopback, 8 requests per client x {args.new_tokens} tokens, greedy, --parallel 8:")
    print(f"server, 1 HTTP client:          {one:8.1f} generated tokens/s")
    print(f"server, 8 concurrent clients:   {eight:8.1f} generated tokens/s")
    print(f"ratio 8 clients / 1 client:     {eight / one:.1f}x (target >= 3x)")


if __name__ == "__main__":
    main()
