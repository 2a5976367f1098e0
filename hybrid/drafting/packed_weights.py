"""Linear layers on prepacked oneDNN weights, for inference on the CPU in float32.

On a CPU, PyTorch's `nn.Linear` calls MKL's sgemm on the weight as stored. For the few rows a decode step or a verify
pass multiplies (1 to 9), that kernel is slow: on a 2-core AVX2 machine the LM head (49152 x 576) takes 8 ms for one
row and 20 ms for nine. oneDNN's matmul on a weight reordered once for it (the layout PyTorch's own compiler uses on
CPUs) takes 4 ms and 6 ms. A decode step gets faster, and a pass over nine tokens costs far less than twice one.

`pack_linears(model)` gives every `nn.Linear` of a model (LoRA's small A and B excepted) a packed copy of its weight
and a forward that uses it, then frees the plain weight, except the LM head's (tied to the embedding here, and read
row by row by the refiner's shortlist scoring) and any other weight a second module shares. A freed weight is a
zero-strided stand-in of the same shape and dtype, so code that reads a layer's shape still works. Where the plain
weight was memory-mapped from its checkpoint (transformers maps safetensors files), its pages that still hold the
file's bytes (none written in place since) are handed back to the system as well, a kept one's included (it is then
read a few rows at a time): otherwise the mapping, kept alive by the weights that stay, would hold them resident
beside the packed copy. `unpack_linears(model)` brings the plain weights back. The numbers are the same matmul in
another summation order: they agree with `nn.Linear` to float32 rounding, not bit for bit.
"""

from __future__ import annotations

import copy
import ctypes
import logging
import mmap
import sys
import types

import torch
from torch import nn

log = logging.getLogger(__name__)


def can_pack(model: nn.Module) -> bool:
    """Whether this PyTorch build packs weights for oneDNN and `model` runs on the CPU in float32."""
    parameter = next(model.parameters(), None)
    return (parameter is not None and parameter.device.type == "cpu" and parameter.dtype == torch.float32
            and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))


def is_packed(model: nn.Module) -> bool:
    return any(hasattr(module, "_packed_weight") for module in model.modules())


@torch.no_grad()
def pack_linears(model: nn.Module, rows_hint: int = 9) -> int:
    """Pack every eligible linear layer of `model` (see the module doc); returns how many. `rows_hint`: the number of
    rows oneDNN tunes the layout for (a verify pass's); any number of rows works."""
    if not can_pack(model):
        return 0
    owners: dict[int, int] = {}
    for module in model.modules():
        for parameter in module.parameters(recurse=False):
            owners[id(parameter)] = owners.get(id(parameter), 0) + 1
    count, mapped = 0, _file_mappings()
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for name, module in model.named_modules():
        if type(module) is not nn.Linear or "lora_" in name or hasattr(module, "_packed_weight"):
            continue
        weight = module.weight
        module._packed_weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows_hint)
        # kept as it is: a tied weight (the embedding), and the LM head's, which the refiner reads rows of
        module._plain_weight = weight if owners.get(id(weight), 0) > 1 or module is head else None
        module.forward = types.MethodType(_packed_forward, module)
        if module._plain_weight is None:
            module.weight = nn.Parameter(torch.zeros((), dtype=weight.dtype).expand(weight.shape), requires_grad=False)
        _drop_file_pages(weight, mapped)  # a tied weight that stays (the embedding) is read a few rows at a time
        count += 1
    log.debug("packed %d linear layers for oneDNN", count)
    return count


@torch.no_grad()
def unpack_linears(model: nn.Module) -> int:
    """Undo pack_linears: plain weights and nn.Linear's own forward again; returns how many layers."""
    count = 0
    for module in model.modules():
        packed = module.__dict__.get("_packed_weight")
        if packed is None:
            continue
        if module._plain_weight is None:
            module.weight = nn.Parameter(packed.to_dense().contiguous(), requires_grad=False)
        del module._packed_weight, module._plain_weight, module.forward
        count += 1
    return count


def plain_copy(module: nn.Module) -> nn.Module:
    """A deep copy of `module` without its hooks, with plain weights whether or not its linear layers are packed (a
    packed tensor cannot be deep-copied: the copy reads it once to rebuild its plain weight). Hooks are left out because
    a hook can hold a whole other model (a block drafter's hook on the drafter's layer holds the drafter)."""
    memo = {}
    for m in module.modules():
        if "_packed_weight" in m.__dict__:
            memo[id(m._packed_weight)] = m._packed_weight
        for key, value in m.__dict__.items():
            if "hooks" in key and isinstance(value, dict):
                memo[id(value)] = type(value)()
    copied = copy.deepcopy(module, memo=memo)
    unpack_linears(copied)
    return copied


def _packed_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad):
        raise RuntimeError("a packed linear layer runs inference only: unpack_linears(model) before training")
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    out = torch.ops.mkldnn._linear_pointwise(rows, self._packed_weight, self.bias, "none", [], "")
    return out.reshape(*x.shape[:-1], out.shape[-1])


def _file_mappings() -> list[tuple[int, int]]:
    """Address ranges of this process's memory-mapped checkpoint files (Linux; none elsewhere)."""
    try:
        with open("/proc/self/maps") as maps:
            rows = [line.split() for line in maps]
    except OSError:
        return []
    return [tuple(int(a, 16) for a in row[0].split("-")) for row in rows if len(row) > 5 and row[5].endswith(".safetensors")]


def _drop_file_pages(weight: torch.Tensor, mapped: list[tuple[int, int]]) -> None:
    """Hand back the resident pages that lie wholly inside `weight` when it is mapped from a checkpoint file: pages of a
    private file mapping that were never written are re-read from the file if touched again, so nothing is lost."""
    start = weight.data_ptr()
    end = start + weight.numel() * weight.element_size()
    if not sys.platform.startswith("linux") or not any(lo <= start and end <= hi for lo, hi in mapped):
        return
    first, last = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE, end // mmap.PAGESIZE * mmap.PAGESIZE
    if last > first and not _written(first, last):
        ctypes.CDLL(None).madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), 4)  # 4: MADV_DONTNEED


def _written(first: int, last: int) -> bool:
    """Whether a page in [first, last) was written since it was mapped (e.g. weights loaded into the model in place):
    such a page is a private copy, no longer the file's, and dropping it would lose what was written. /proc/self/pagemap
    marks each present page (bit 63) as the file's or not (bit 61). When it cannot be read, assume written."""
    try:
        with open("/proc/self/pagemap", "rb") as pagemap:
            pagemap.seek(first // mmap.PAGESIZE * 8)
            data = pagemap.read((last - first) // mmap.PAGESIZE * 8)
    except OSError:
        return True
    entries = torch.frombuffer(bytearray(data), dtype=torch.int64)
    present, files = entries < 0, (entries >> 61) & 1 == 1
    return bool((present & ~files).any())
