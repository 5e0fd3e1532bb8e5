"""Rates that published standards fix, for the figures gpucal compares with or derives from them.

PCIe: the PCI-SIG base specifications, revisions 1.0 to 7.0 (per lane and direction: the signalling rate in
GT/s and the line code's efficiency: 8b/10b to Gen2, 128b/130b for Gen3 to Gen5, FLIT mode for Gen6 and Gen7).
"""

from __future__ import annotations

__all__ = ["PCIE_GT_S", "pcie_Bps"]

# PCIe per lane and direction: GT/s and line-code efficiency (8b/10b to Gen2, 128b/130b Gen3-5, FLIT Gen6)
PCIE_GT_S = {1: (2.5, 0.8), 2: (5.0, 0.8), 3: (8.0, 128 / 130), 4: (16.0, 128 / 130), 5: (32.0, 128 / 130),
             6: (64.0, 242 / 256), 7: (128.0, 242 / 256)}  # GT/s per lane, encoding efficiency (6 and 7: FLIT)


def pcie_Bps(generation: int, width: int) -> float:
    """The PCIe rate per direction in B/s: GT/s × encoding × lanes / 8."""
    gts, enc = PCIE_GT_S[generation]
    return gts * 1e9 * enc * width / 8.0
