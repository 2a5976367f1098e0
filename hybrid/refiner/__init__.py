"""The diffusion refiner (hybrid.refiner.model) with its checkpoint format, detection head, caches and locations."""

from hybrid.refiner.cache import LowerStates, PromptState
from hybrid.refiner.head import DetectionHead
from hybrid.refiner.io import (ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME, CONFIG_NAME, LORA_TARGETS, MASK_EMBEDDING_KEY, MASK_MARKER_KEY,
                               WEIGHTS_NAME, RefinerConfig, fingerprint, read_config, read_tensors)
from hybrid.refiner.location import DEFAULT_REFINER, SHIPPED_REFINERS, resolve_refiner
from hybrid.refiner.model import Refiner, RefinerOutput

__all__ = [
    "ADAPTER_CONFIG_NAME", "ADAPTER_WEIGHTS_NAME", "CONFIG_NAME", "DEFAULT_REFINER", "LORA_TARGETS", "MASK_EMBEDDING_KEY",
    "MASK_MARKER_KEY", "SHIPPED_REFINERS", "WEIGHTS_NAME", "DetectionHead", "LowerStates", "PromptState", "Refiner",
    "RefinerConfig", "RefinerOutput", "fingerprint", "read_config", "read_tensors", "resolve_refiner",
]
