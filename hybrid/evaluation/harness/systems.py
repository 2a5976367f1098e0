"""What `hybrid eval` and `hybrid bench` compare: draft only, diffusion only and hybrid, each one `System`.

A system's name is what reports print: eval rows carry the step count ("diffusion-K8", "hybrid-K4",
"hybrid-K8-unverified", "hybrid-K4-grounded"); bench rows keep it in a column of its own ("diffusion", "hybrid",
"hybrid-cache4").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from hybrid.config import SamplerConfig

_NAME = re.compile(r"(draft|diffusion|hybrid)(?:-K(\d+))?(-unverified)?(-grounded)?(?:-cache(\d+))?")


@dataclass(frozen=True)
class System:
    mode: str  # draft | diffusion | hybrid
    steps: int = 0  # refine steps K (0: draft only)
    verified: bool = True  # False: every refiner proposal is kept, unverified, unguarded, unlisted (eval's "-unverified" row)
    grounded: bool = False  # re-noise the unsupported names and numbers and fill them from the source
    cache_refresh: int = 0  # > 1: approximate canvas-cache reuse, refreshed every N steps (bench)

    @property
    def label(self) -> str:
        """The name without the step count (bench's system column)."""
        return self.mode + (f"-cache{self.cache_refresh}" if self.cache_refresh else "")

    @property
    def name(self) -> str:
        """The name eval reports print."""
        if self.mode == "draft":
            return "draft"
        return (f"{self.mode}-K{self.steps}" + ("" if self.verified else "-unverified") + ("-grounded" if self.grounded else "")
                + (f"-cache{self.cache_refresh}" if self.cache_refresh else ""))

    @property
    def refines_draft(self) -> bool:
        return self.mode == "hybrid"

    def refine_config(self, base: SamplerConfig) -> SamplerConfig:
        """The refine settings this system runs with: `base` (the run's settings) with its own K, verification,
        selection and cache. The pipeline takes it with `mode=system.mode`."""
        if self.mode == "draft":
            return replace(base, steps=0)
        changes = {"steps": self.steps, "cache_refresh": self.cache_refresh}
        if not self.verified:  # what the proposals alone do: neither the drafter nor the change guard holds any back,
            changes["verify"] = False  # and the drafter's shortlist leaves no token out
            changes["min_change_confidence"] = 0.0
            changes["shortlist"] = 0
        if self.grounded:
            changes["select"] = "unsupported"
        return replace(base, **changes)

    @classmethod
    def from_name(cls, name: str) -> "System":
        """The system an eval report's row name stands for (to rebuild a report from its results.json)."""
        match = _NAME.fullmatch(name)
        if match is None:
            raise ValueError(f"not a system name: {name!r}")
        mode, steps, unverified, grounded, refresh = match.groups()
        return cls(mode, int(steps or 0), verified=not unverified, grounded=bool(grounded), cache_refresh=int(refresh or 0))


DRAFT = System("draft")
