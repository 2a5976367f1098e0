"""Running `hybrid` in child processes for the tests: killed mid-run, or launched as several data-parallel processes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# `hybrid` with every pipeline call slowed down, so that a test can kill it between two saved results
SLOWED = ("import sys, time, hybrid.pipeline as p; call = p.HybridPipeline.__call__; "
          "p.HybridPipeline.__call__ = lambda self, *a, **k: (time.sleep(0.3), call(self, *a, **k))[1]; "
          "from hybrid.cli import cli; sys.argv[0] = 'hybrid'; cli()")


def child_env() -> dict:
    # one thread each, so that one process and several compute alike
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "HYBRID_DEBUG": ""}


def run_hybrid(args: list[str], processes: int = 1) -> subprocess.CompletedProcess:
    """`hybrid ARGS` in `processes` processes (torch.distributed.run, gloo on the CPU, like `accelerate launch --cpu`)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", "-m", "hybrid.cli"]
    command = launcher if processes > 1 else [sys.executable, "-m", "hybrid.cli"]
    return subprocess.run(command + args, env=child_env(), capture_output=True, text=True, timeout=600)


def kill_when(args: list[str], ready, timeout: float = 300) -> None:
    """Start a slowed-down `hybrid ARGS`, wait until `ready()` is true, then SIGKILL it. Fails if it ended first."""
    child = subprocess.Popen([sys.executable, "-c", SLOWED, *args], env=child_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while not ready():
        assert child.poll() is None, f"it ended before it could be killed: {child.stderr.read()}"
        assert time.monotonic() < deadline, "it never got there"
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stderr.close()
