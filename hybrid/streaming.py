"""Live generation: the draft as it is written, then the canvas after every refine step, then the final result.

    for event in pipe.stream("The history of Rome", max_new_tokens=48):
        if event.kind == "draft":
            print(event.text, end="", flush=True)      # each new piece of the draft
        elif event.kind == "step":
            ...                                        # event.text: the whole canvas after refine step event.step
        else:                                          # "done": event.result is the GenerationResult
            print("\\n" + event.result.text)

The pipeline runs in a worker thread and hands events over a queue, so the caller reads them while it works.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Iterator

MASK_SHOWN = "▯"  # how a still-masked canvas slot reads in a step's text


@dataclass
class StreamEvent:
    kind: str  # "draft" (a new piece of the draft), "step" (the canvas after a refine step), "done"
    text: str  # the piece, the canvas text, or the final text
    step: int = 0  # the refine step, for "step"
    result: object = None  # the GenerationResult, for "done"


def stream(pipe, prompt: str, **settings) -> Iterator[StreamEvent]:
    """Events for one prompt (see the module docstring); `settings` are those of `pipe(...)`."""
    if not isinstance(prompt, str):
        from hybrid.errors import HybridError

        raise HybridError("stream() takes one prompt")
    events: queue.Queue = queue.Queue()
    tokenizer, ends = pipe.tokenizer, pipe.drafter.end_ids
    drafted: list[int] = []
    shown = [""]

    def on_token(tokens):
        token = int(tokens[0])
        if token in ends or (drafted and drafted[-1] in ends):
            drafted.append(token)
            return
        drafted.append(token)
        text = tokenizer.decode([t for t in drafted if t not in ends], skip_special_tokens=True)
        if len(text) > len(shown[0]) and not text.endswith("\ufffd"):  # wait for a split character to complete
            events.put(StreamEvent("draft", text[len(shown[0]):]))
            shown[0] = text

    def on_step(step, canvas, changed):
        events.put(StreamEvent("step", canvas_text(pipe, canvas[0].tolist()), step))

    def work():
        try:
            events.put(StreamEvent("done", "", result=pipe(prompt, callback_on_token=on_token, callback_on_step_end=on_step, **settings)))
        except BaseException as exc:  # handed to the reader, who raises it
            events.put(exc)

    worker = threading.Thread(target=work, name="hybrid-stream", daemon=True)
    worker.start()
    while True:
        event = events.get()
        if isinstance(event, BaseException):
            worker.join()
            raise event
        if event.kind == "done":
            event.text = event.result.text
            worker.join()
            yield event
            return
        yield event


def canvas_text(pipe, ids: list[int]) -> str:
    """A canvas as text up to its first end token, each mask shown as MASK_SHOWN."""
    mask_id = pipe.refiner.mask_token_id if pipe.refiner is not None else None
    pieces, run = [], []
    for token in ids:
        if token in pipe.drafter.end_ids:
            break
        if token == mask_id:
            pieces.append(pipe.tokenizer.decode(run, skip_special_tokens=True) + MASK_SHOWN)
            run = []
        else:
            run.append(token)
    return "".join(pieces) + pipe.tokenizer.decode(run, skip_special_tokens=True)
