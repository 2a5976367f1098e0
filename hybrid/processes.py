"""Data parallel over the processes of `accelerate launch` (or `torch.distributed.run`), on accelerate's own tools.

    for done in sharded_rounds(batches, work):      # every process runs its share of each round
        if is_main_process(): append(done)          # the results of the round, in input order, on every process

Work is handed out in rounds of one item per process (`PartialState.split_between_processes`) and each round's results
are gathered (`gather_object`) in the items' order, so the main process can save them as they come: an interrupted
multi-process run keeps every finished round, like a single process. An item's result must not depend on which
process ran it: the items (e.g. batches of prompts) are fixed before they are shared out, so one process and many
give the same results. Outside a launcher there is one process and nothing is gathered.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Iterator

from hybrid.errors import HybridError

LAUNCHED = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE")  # what launchers set for their processes


def launch_state():
    """accelerate's PartialState under a launcher with several processes, else None."""
    if not any(int(os.environ.get(name, "1") or 1) > 1 for name in LAUNCHED):
        return None  # one plain process: accelerate is not needed
    import torch
    from accelerate import PartialState

    # on the CPU (no GPU, or `accelerate launch --cpu`) accelerate needs telling, or it sees no distributed run (gloo)
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true") or not torch.cuda.is_available()
    return PartialState(cpu=cpu)


def process_count() -> int:
    state = launch_state()
    return state.num_processes if state is not None else 1


def is_main_process() -> bool:
    state = launch_state()
    return state is None or state.is_main_process


def process_device(device: str) -> str:
    """The device this process runs on: under a launcher, 'auto' or 'cuda' means this process's own GPU."""
    state = launch_state()
    if state is not None and device in ("auto", "cuda") and state.device.type != "cpu":
        return str(state.device)
    return device


def wait_for_everyone() -> None:
    state = launch_state()
    if state is not None:
        state.wait_for_everyone()


def sharded_rounds(items: list, work: Callable[[object], list[dict]]) -> Iterator[list[dict]]:
    """For each round of one item per process: the concatenated `work(item)` of the round's items, in their order, on
    every process. `work` returns JSON-like records. A HybridError in any process is raised in every process, after
    the round's records from the items before it are yielded, so that the others stop too instead of waiting."""
    state = launch_state()
    size = state.num_processes if state is not None else 1
    for start in range(0, len(items), size):
        round_items = items[start : start + size]
        if state is None:
            yield from _one(round_items, work)
            continue
        from accelerate.utils import gather_object

        with state.split_between_processes(round_items) as mine:
            # JSON text, so that only plain strings travel between the processes
            produced = [json.dumps(_outcome(work, item)) for item in mine]
        outcomes = [json.loads(text) for text in gather_object(produced)]
        done = []
        for outcome in outcomes:
            if "error" in outcome:
                yield done
                raise HybridError(outcome["error"]) if outcome["user"] else RuntimeError(outcome["error"])
            done += outcome["records"]
        yield done


def _one(items: list, work) -> Iterator[list[dict]]:
    for item in items:
        yield work(item)


def _outcome(work, item) -> dict:
    try:
        return {"records": work(item)}
    except HybridError as exc:
        return {"error": str(exc), "user": True}
    except Exception as exc:  # a bug: the other processes must not wait for this one forever
        return {"error": f"{type(exc).__name__}: {exc}", "user": False}
