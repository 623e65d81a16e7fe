"""One call for the CLI: merged HF model → GGUF files, checked against transformers, plus a Modelfile."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from mochi_pipeline.deployment.gguf_export import GGUFExport, export_gguf
from mochi_pipeline.deployment.gguf_verify import VerificationReport, verify_export
from mochi_pipeline.deployment.ollama import ModelfileError, OllamaModelfile, build_modelfile
from mochi_pipeline.deployment.settings import ExportSettings
from mochi_pipeline.storage import atomic_write_text


class ExportResult(BaseModel):
    gguf: GGUFExport
    verification: VerificationReport | None = None
    modelfile: OllamaModelfile | None = None


def modelfile_source(gguf: GGUFExport, settings: ExportSettings) -> Path:
    """The GGUF the Modelfile points at: ``settings.ollama_quantization`` if exported, else the first file."""
    for f in gguf.files:
        if f.quantization == settings.ollama_quantization:
            return Path(f.path)
    if not gguf.files:
        raise ModelfileError("No GGUF file was exported, so there is nothing for a Modelfile to use.")
    return Path(gguf.files[0].path)


def write_modelfile(gguf: GGUFExport, out_dir: Path, settings: ExportSettings) -> OllamaModelfile:
    """Write ``out_dir/Modelfile`` for the chosen GGUF (FROM relative to ``out_dir``)."""
    source = modelfile_source(gguf, settings)
    text = build_modelfile(source, out_dir, system_prompt=settings.system_prompt,
                           parameters=settings.modelfile_parameters(), template_override=settings.ollama_template)
    path = atomic_write_text(Path(out_dir) / "Modelfile", text)
    stops = [json.loads(line.removeprefix("PARAMETER stop ")) for line in text.splitlines()
             if line.startswith("PARAMETER stop ")]
    return OllamaModelfile(path=str(path.resolve()), gguf_path=str(source), stop=stops,
                           create_command=f"ollama create {settings.name} -f {path.resolve()}")


def export(model_dir: str | Path, out_dir: str | Path, settings: ExportSettings | None = None, verify: bool = True,
           modelfile: bool = True, log: Callable[[str], None] = print) -> ExportResult:
    """Convert ``model_dir`` into ``out_dir/<name>-<type>.gguf`` (+ ``Modelfile``), verifying each file."""
    settings = settings or ExportSettings()
    out_dir = Path(out_dir)
    gguf = export_gguf(Path(model_dir), out_dir, settings.quantizations, name=settings.name, log=log)
    result = ExportResult(gguf=gguf)
    if verify:
        log("Comparing each GGUF with the transformers model")
        files = {f.quantization: Path(f.path) for f in gguf.files}
        result.verification = verify_export(Path(model_dir), files, settings.tolerances())
    if modelfile:
        result.modelfile = write_modelfile(gguf, out_dir, settings)
    return result
