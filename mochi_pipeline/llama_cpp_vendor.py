"""llama.cpp's own files, taken from the llama-cpp-python source distribution on PyPI.

The GGUF converter must match the runtime that loads its output, so both come from the same pinned
release: the runtime is the installed ``llama-cpp-python`` wheel, and this module extracts the
converter (``convert_hf_to_gguf.py`` with ``conversion/`` and ``gguf-py/``) and the vocabulary
GGUFs (``models/ggml-vocab-*.gguf``) from that release's sdist into a cache. None of that code
is copied into this repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from mochi_pipeline.storage import build_key, build_once, file_sha256

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
SDIST_NAME = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
_WANTED = (
    "convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/", "gguf-py/",
    "models/ggml-vocab-", "requirements/",
)


class VendorError(RuntimeError):
    pass


def cache_root() -> Path:
    """``$MOCHI_CACHE`` or ``~/.cache/mochi``: build products shared by every project.

    Every build in it is keyed by the code and settings that make it (``storage.build_key``). The test
    session sets ``$MOCHI_CACHE`` to its own root (``mochi_pipeline_tests/conftest.py``), never this one.
    """
    return Path(os.environ.get("MOCHI_CACHE") or Path.home() / ".cache" / "mochi").expanduser()


def _download_sdist(dest: Path) -> Path:
    target = dest / SDIST_NAME
    if target.exists() and file_sha256(target) == SDIST_SHA256:
        return target
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        cmd = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-python",
            "--quiet", "-d", tmp, f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / SDIST_NAME
        if not got.exists():
            raise VendorError(
                f"Could not download {SDIST_NAME} from PyPI (needed for llama.cpp's GGUF converter "
                f"and vocabularies).\n{proc.stderr.strip()[-800:]}\n"
                f"Fix: check access to PyPI, or place the file in {dest} by hand."
            )
        digest = file_sha256(got)
        if digest != SDIST_SHA256:
            raise VendorError(f"{SDIST_NAME} has sha256 {digest}, expected {SDIST_SHA256}; refusing to use it.")
        os.replace(got, target)
    return target


def llama_cpp_dir() -> Path:
    """Directory holding ``convert_hf_to_gguf.py``, ``gguf-py/`` and ``models/`` (extracted once per key:
    the release's checksum and this module's code, which picks what is extracted)."""
    dest = cache_root() / f"llama.cpp-{LLAMA_CPP_PYTHON_VERSION}-{build_key([__file__], SDIST_SHA256)}"
    extracted = lambda d: all((d / n).exists() for n in ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py"))  # noqa: E731
    return build_once(dest, extracted, lambda tmp: _extract(_download_sdist(dest.parent), tmp))


def _extract(sdist: Path, tmp: Path) -> None:
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            if not member.name.startswith(prefix) or not (member.isfile() or member.isdir()):
                continue
            rel = member.name[len(prefix):]
            if not rel.startswith(_WANTED):
                continue
            out = tmp / rel
            if member.isdir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, out.open("wb") as dst:
                shutil.copyfileobj(src, dst)


def vocab_gguf(name: str = "starcoder") -> Path:
    path = llama_cpp_dir() / "models" / f"ggml-vocab-{name}.gguf"
    if not path.exists():
        raise VendorError(f"No vocabulary {path.name} in llama.cpp {LLAMA_CPP_PYTHON_VERSION}.")
    return path


def converter_script() -> Path:
    return llama_cpp_dir() / "convert_hf_to_gguf.py"


def lora_converter_script() -> Path:
    """llama.cpp's PEFT-adapter → GGUF LoRA converter (same release as the runtime)."""
    return llama_cpp_dir() / "convert_lora_to_gguf.py"


if __name__ == "__main__":  # `python -m mochi_pipeline.llama_cpp_vendor`: fetch at set-up time
    print(llama_cpp_dir())
