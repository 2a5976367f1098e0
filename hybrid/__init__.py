"""hybrid: autoregressive drafts refined by a masked-diffusion refiner.

The heavy pieces (torch, transformers) load on first use, so `hybrid --help` stays instant.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

from hybrid.errors import HybridError

try:
    __version__ = version("hybrid")
except PackageNotFoundError:  # a source tree that was not installed
    __version__ = "0.0.0"

_LAZY = {
    "HybridPipeline": "hybrid.pipeline",
    "GenerationResult": "hybrid.results",
    "StageTimings": "hybrid.results",
    "Drafter": "hybrid.drafting.drafter",
    "DraftConfig": "hybrid.config",
    "Refiner": "hybrid.refiner",
    "SamplerConfig": "hybrid.config",
}

__all__ = ["HybridError", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hybrid' has no attribute {name!r}")
