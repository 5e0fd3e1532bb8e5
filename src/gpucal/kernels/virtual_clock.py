"""The virtual machine's clock: every time it prices (a copy, a kernel, a collective) read as one sample
would read, with the faults of its ``virtual:`` spec (``kernels/virtual_spec.py``) applied. Shared by the
virtual backend (``kernels/virtual.py``) and the virtual collectives (``probes/collective_virtual.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gpucal.kernels.virtual_spec import Faults

__all__ = ["VirtualClock"]


@dataclass
class VirtualClock:
    """The virtual machine's clock of samples: a priced time as one sample would read, with the machine's
    faults (noise, outliers, warm-up slowness per case key) drawn from one generator seeded by the faults."""

    faults: Faults
    rng: np.random.Generator = field(init=False)
    seen: dict = field(default_factory=dict)

    def __post_init__(self):
        self.rng = np.random.default_rng(self.faults.seed)

    def sample(self, key: str, seconds: float) -> float:
        """``seconds`` as one sample would read: noise, outliers and warm-up slowness applied."""
        f = self.faults
        factor = max(0.05, 1.0 + f.noise_frac * self.rng.standard_normal()) if f.noise_frac else 1.0
        if f.outlier_frac and self.rng.random() < f.outlier_frac:
            factor *= f.outlier_factor
        n = self.seen.get(key, 0)
        self.seen[key] = n + 1
        if n < f.warmup_runs:
            factor *= f.warmup_factor
        return seconds * factor
