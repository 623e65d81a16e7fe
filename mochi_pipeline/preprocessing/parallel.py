"""The process pool used for parsing and MinHash work (both CPU-bound, so threads would not help)."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

# Imported once by the fork server, so each worker starts in milliseconds, not after a second of imports.
_PRELOAD = ["mochi_pipeline.preprocessing.code_chunker", "mochi_pipeline.preprocessing.deduplicator"]


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes forked from a clean server, never from the (threaded) caller."""
    context = get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    return ProcessPoolExecutor(workers, mp_context=context)
