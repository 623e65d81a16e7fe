"""Two-process training launched again and again on a machine under load: the reproduction of issue 11b.

    python -m mochi_pipeline_tests.training.launch_under_load [--runs 10]

Each run trains the store project's LoRA with ``training.processes: 2`` (distributed.py) while a busy loop
spins on every core and the launched processes are paused and resumed at random (what a busy machine's
scheduler does to them, only more often), then checks what a user relies on: the launch succeeded, the two
processes shared the steps as one group, the final folder is whole, and no checkpoint was left behind.

Before the fix, each launched process trained the whole job alone on a CPU (transformers saw no process
group), so both wrote the final folder as rank 0 and the first to finish removed the checkpoints the other
was still writing: "rank 0: Exception: No such file or directory (os error 2)". Exit status 1 when any run
broke one of the checks.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import signal
import tempfile
import threading
import time
from pathlib import Path

import psutil
from datasets import DatasetDict

from mochi_pipeline.training import distributed, trainer
from mochi_pipeline.training.base_models import resolve_base
from mochi_pipeline.training.sft_data import load_dataset_dict
from mochi_pipeline_tests.loopback import free_port
from mochi_pipeline_tests.training.store_project import TEST_TINY_STEPS, fast_settings, make_store_dataset


def _spin(stop) -> None:
    while not stop.is_set():
        pass


def _jitter(stop: threading.Event, seed: int) -> None:
    """Pause one of this process's launched descendants for up to half a second, again and again."""
    rng = random.Random(seed)
    me = psutil.Process()
    while not stop.is_set():
        workers = [p for p in me.children(recursive=True) if "mochi_pipeline.training.distributed" in " ".join(
            _cmdline(p))]
        if workers:
            victim = rng.choice(workers)
            try:
                victim.send_signal(signal.SIGSTOP)
                time.sleep(rng.uniform(0.0, 0.5))
            except psutil.Error:
                pass
            finally:
                try:
                    victim.send_signal(signal.SIGCONT)
                except psutil.Error:
                    pass
        time.sleep(rng.uniform(0.0, 0.2))


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def broken_checks(run_dir: Path) -> list[str]:
    """What a finished two-process run left that it should not have ('' list: all well)."""
    problems = []
    result_file = run_dir / trainer.FINAL_DIR / trainer.RESULT_FILE
    if not result_file.is_file():
        return ["no whole final folder"]
    processes = json.loads(result_file.read_text()).get("processes", 1)
    if processes != 2:
        problems.append(f"the steps were not shared: each process trained alone (group of {processes})")
    if (run_dir / "checkpoints").exists():
        problems.append("checkpoints left behind")
    if any(p.name.startswith(".final") for p in run_dir.iterdir()):
        problems.append("a temporary final folder left behind")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--spinners", type=int, default=os.cpu_count() or 2, help="busy loops beside the runs")
    args = parser.parse_args(argv)

    base = resolve_base("tiny", TEST_TINY_STEPS)
    work = Path(tempfile.mkdtemp(prefix="launch-under-load-"))
    store = make_store_dataset(work / "store")
    DatasetDict({"train": load_dataset_dict(store / "hf")["train"]}).save_to_disk(str(work / "data"))

    stop_spin = multiprocessing.get_context("spawn").Event()
    spinners = [multiprocessing.get_context("spawn").Process(target=_spin, args=(stop_spin,), daemon=True)
                for _ in range(args.spinners)]
    for p in spinners:
        p.start()
    failed = 0
    try:
        for i in range(args.runs):
            stop_jitter = threading.Event()
            jitter = threading.Thread(target=_jitter, args=(stop_jitter, i), daemon=True)
            jitter.start()
            started = time.monotonic()
            runs = work / f"runs-{i}"
            try:
                result = distributed.train_launched(
                    work / "data", base, fast_settings(processes=2, main_process_port=free_port(), max_steps=3,
                                                       batch_size=2), runs, log=lambda _: None)
                problems = broken_checks(Path(result.output_dir).parent)
            except distributed.LaunchError as err:
                problems = [str(err).splitlines()[0]]
            finally:
                stop_jitter.set()
                jitter.join()
            failed += bool(problems)
            print(f"run {i + 1}/{args.runs}: {'; '.join(problems) or 'ok'} ({time.monotonic() - started:.0f} s)",
                  flush=True)
    finally:
        stop_spin.set()
        for p in spinners:
            p.join(5)
    print(f"{args.runs - failed} of {args.runs} runs passed every check")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
