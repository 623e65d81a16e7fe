"""The process pool for parsing and MinHash work (both CPU-bound, so threads would not help).

One pool per process and worker count, started on first use and kept: chunking and
deduplication (and a second run in the same process) share it instead of each paying the start.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from functools import cache
from multiprocessing import get_context

# Imported once by the fork server, so each worker starts in milliseconds, not after a second of imports.
_PRELOAD = ["mochi_pipeline.preprocessing.code_chunker", "mochi_pipeline.preprocessing.deduplicator"]


@cache
def shared_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes forked from a clean server, never from the (threaded) caller."""
    context = get_context("forkserver")
    context.set_forkserver_preload(_PRELOAD)
    return ProcessPoolExecutor(workers, mp_context=context)
