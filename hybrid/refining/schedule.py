"""Noise schedules for masked diffusion.

`alpha(t)` is the probability that a token is still clean at time t in [0, 1]:
alpha(0) = 1 is clean text, alpha(1) = 0 is all masks, and alpha decreases in between.

* Training draws t ~ U(0, 1), masks each token with probability 1 - alpha(t), and weights the
  cross-entropy on masked tokens by `weight(t) = -alpha'(t) / (1 - alpha(t))` (the MDLM ELBO weight).
* Sampling walks t from 1 down to 0 in K equal steps. `tokens_per_step` turns that walk into integer
  commit counts: after step k, round(n * (1 - alpha(1 - k/K))) of the n masked tokens are still masked.

The schedules differ only in alpha (and its derivative):

* "linear":    alpha = 1 - t. Same number of tokens each step (LLaDA). MDLM/SEDD call this noise "loglinear"
               because their sigma = -log(alpha) = -log(1 - t); here the names describe alpha itself.
* "cosine":    alpha = 1 - sin(pi t / 2), i.e. MaskGIT's masked fraction cos(pi/2 * progress). Commits few
               tokens in the first steps, when context is weakest, and more at the end.
* "loglinear": alpha = 1 - ln(1 + (e - 1) t), a masked fraction logarithmic in t. Also back-loaded, gentler
               than cosine in the last steps.
"""

import math
from typing import Union

import torch

from hybrid.errors import HybridError

Time = Union[float, torch.Tensor]

T_MIN = 1e-4  # weight(t) ~ 1/t as t -> 0; evaluating it at t >= T_MIN keeps it finite (<= 1e4)


def _as_tensor(t: Time) -> torch.Tensor:
    if isinstance(t, torch.Tensor):
        return t if t.is_floating_point() else t.double()
    return torch.tensor(float(t), dtype=torch.float64)


def _like(value: torch.Tensor, t: Time) -> Time:
    return value if isinstance(t, torch.Tensor) else float(value)


class Schedule:
    """Base class: subclasses define `_alpha` and `_dalpha` (its derivative) on float tensors in [0, 1]."""

    name = "base"

    def _alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _dalpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def alpha(self, t: Time) -> Time:
        """Probability a token is clean at time t (clamped to [0, 1]). Float in, float out; tensor in, tensor out."""
        return _like(self._alpha(_as_tensor(t).clamp(0.0, 1.0)), t)

    def weight(self, t: Time) -> Time:
        """MDLM loss weight -alpha'(t) / (1 - alpha(t)), evaluated at max(t, T_MIN) so it is always finite."""
        x = _as_tensor(t).clamp(T_MIN, 1.0)
        w = -self._dalpha(x) / (1.0 - self._alpha(x))
        return _like(torch.nan_to_num(w, nan=0.0, posinf=1.0 / T_MIN), t)

    def remaining(self, num_masked: int, steps: int) -> list[int]:
        """How many of `num_masked` tokens are still masked after each step k = 0..steps (first n, last 0)."""
        counts = [num_masked]
        for k in range(1, steps + 1):
            still = math.floor(num_masked * (1.0 - self.alpha((steps - k) / steps)) + 0.5)
            counts.append(min(counts[-1], max(still, 0)))
        counts[-1] = 0
        return counts

    def tokens_per_step(self, num_masked: int, steps: int) -> list[int]:
        """Tokens to commit at each of `steps` steps: non-negative, sums to `num_masked`, some may be 0."""
        if num_masked < 0 or steps < 0:
            raise ValueError(f"tokens_per_step needs num_masked >= 0 and steps >= 0, got {num_masked}, {steps}")
        if steps == 0:
            if num_masked:
                raise ValueError("cannot commit masked tokens in 0 steps")
            return []
        counts = self.remaining(num_masked, steps)
        return [before - after for before, after in zip(counts, counts[1:])]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LinearSchedule(Schedule):
    name = "linear"

    def _alpha(self, t):
        return 1.0 - t

    def _dalpha(self, t):
        return -torch.ones_like(t)


class CosineSchedule(Schedule):
    name = "cosine"

    def _alpha(self, t):
        return 1.0 - torch.sin(0.5 * math.pi * t)

    def _dalpha(self, t):
        return -0.5 * math.pi * torch.cos(0.5 * math.pi * t)


class LogLinearSchedule(Schedule):
    name = "loglinear"

    def _alpha(self, t):
        return 1.0 - torch.log1p((math.e - 1.0) * t)

    def _dalpha(self, t):
        return -(math.e - 1.0) / (1.0 + (math.e - 1.0) * t)


_SCHEDULES = {cls.name: cls for cls in (LinearSchedule, CosineSchedule, LogLinearSchedule)}
SCHEDULES = tuple(_SCHEDULES)


def get_schedule(name: str) -> Schedule:
    """Return the schedule called `name`; raises HybridError listing the valid names otherwise."""
    if name not in _SCHEDULES:
        raise HybridError(f"unknown noise schedule {name!r}; choose one of: {', '.join(SCHEDULES)}")
    return _SCHEDULES[name]()
