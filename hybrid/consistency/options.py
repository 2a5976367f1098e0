"""How `hybrid consistency train` trains the classifier; the defaults made the shipped checkpoint. No torch here,
so that the CLI can read the defaults without loading it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from hybrid.consistency.classifier import DEFAULT_CHECKPOINT


@dataclass
class TrainingOptions:
    output: Path = DEFAULT_CHECKPOINT
    sentences: int = 4000  # training sentences (2 pairs each)
    plain_weight: int = 8  # times each plain-English sentence is drawn
    in_window_share: float = 1.0  # share of entity/number swaps whose replacement comes from the source window itself
    epochs: float = 4.0
    minutes: float = 7.0  # stop fine-tuning after this long
    batch_size: int = 16
    lr_layers: float = 1e-4
    lr_head: float = 1e-3
    held_out_per_kind: int = 250
    calibration_share: float = 0.08  # share of training pairs kept aside to choose the decision threshold
    seed: int = 0


    def recorded(self) -> dict:
        """The options as metrics.json records them: strings, the output folder as it was given (the shipped
        classifier's folder, the default, as `checkpoints/consistency`), so that the record names no machine's path."""
        args = {key: str(value) for key, value in asdict(self).items()}
        if Path(self.output).resolve() == Path(DEFAULT_CHECKPOINT).resolve():
            args["output"] = "checkpoints/consistency"
        return args
