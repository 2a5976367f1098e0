"""Peak resident memory of a `hybrid generate` process, read from /proc while it runs (Linux)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hybrid.errors import HybridError
from hybrid.models import DEFAULT_DRAFTER
from hybrid.refiner import Refiner, resolve_refiner


def peak_memory_of_generate(refiner: str | None, max_new_tokens: int = 128) -> float:
    """Peak resident memory (MB) of a `hybrid generate --refine-steps 8` process on the default drafter."""
    command = [sys.executable, "-m", "hybrid.cli", "generate", "The history of Rome", "--refine-steps", "8",
               "--max-new-tokens", str(max_new_tokens)]
    with tempfile.TemporaryDirectory() as tmp:
        if refiner is None and resolve_refiner(None) is None:  # time an untrained refiner written to a temp folder
            from hybrid.models import load_causal_lm

            model, _ = load_causal_lm(DEFAULT_DRAFTER)
            Refiner.create(model, DEFAULT_DRAFTER).save(Path(tmp) / "untrained")
            del model
            refiner = str(Path(tmp) / "untrained")
        if refiner is not None:
            command += ["--refiner", refiner]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        peak_kb = 0
        while process.poll() is None:  # the child's own high-water mark (ru_maxrss of children would count the fork)
            peak_kb = max(peak_kb, _vm_hwm_kb(process.pid))
            time.sleep(0.05)
        stderr = process.stderr.read().strip()
        if process.returncode != 0:
            raise HybridError(f"the memory probe failed: {stderr.splitlines()[-1] if stderr else process.returncode}")
    return peak_kb / 1024


def _vm_hwm_kb(pid: int) -> int:
    """Peak resident memory so far of a running process, from /proc (Linux); 0 where unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0
