"""``p2p.png``: the P2P verdict of each ordered device pair, from the profile's ``links[]``."""

from __future__ import annotations

import numpy as np

from gpucal import profiles
from gpucal.figures.common import BYTES_PER_GB, PlotSkipped, canvas_figure, lacks, title
from gpucal.profiles.model import LinkEntry

__all__ = ["NOT_MEASURED_COLOUR", "VERDICT_COLOURS", "p2p_figure"]

VERDICT_COLOURS = {"nvlink": "#1b7837", "p2p-pcie": "#7fbf7b", "host-staged": "#fdb863",
                   "p2p-slower-than-staged": "#e66101", "p2p-corrupt": "#d7191c"}
NOT_MEASURED_COLOUR = "#d9d9d9"


def _cell_text(link: LinkEntry) -> str:
    """A cell's words: the link's verdict, its beta in GB/s and its flags."""
    beta_Bps = link.beta_Bps.value
    text = f"{link.verdict}\n" + (f"{beta_Bps / BYTES_PER_GB:.3g} GB/s" if beta_Bps is not None else "beta unknown")
    if link.flags:
        text += "\n" + ", ".join(link.flags)
    return text


def p2p_figure(doc: profiles.Document):
    """A source x destination matrix of ``links[]``, coloured by verdict, each cell its verdict and beta."""
    profile = doc.profile
    links = profile.links or []
    n = max([profile.device_count] + [max(link.src, link.dst) + 1 for link in links])
    if not links and profile.source not in ("measured", "simulated"):
        raise lacks(doc, "measured links (links[])")
    if n < 2:
        raise PlotSkipped("one device: P2P not applicable")
    if not links:
        raise PlotSkipped(f"{doc.name} has no links measured between its {n} devices")
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    verdicts = list(VERDICT_COLOURS)
    codes = np.full((n, n), float(len(verdicts)))  # not measured
    np.fill_diagonal(codes, np.nan)
    size_in = min(max(5.0, 1.5 * n + 2.0), 20.0)  # cells of 1.5 in up to 12 devices, then smaller
    fig = canvas_figure((size_in, size_in + 0.8))
    ax = fig.add_subplot()
    font = 8.0 * min(1.0, size_in / (1.5 * n + 2.0))
    for link in links:
        codes[link.src, link.dst] = verdicts.index(link.verdict)
        ax.text(link.dst, link.src, _cell_text(link), ha="center", va="center", fontsize=font)
    cmap = ListedColormap([VERDICT_COLOURS[v] for v in verdicts] + [NOT_MEASURED_COLOUR]).with_extremes(bad="white")
    ax.imshow(np.ma.masked_invalid(codes), cmap=cmap, vmin=-0.5, vmax=len(verdicts) + 0.5)
    ticks = range(n)
    ax.set_xticks(ticks, [f"dev{i}" for i in ticks])
    ax.set_yticks(ticks, [f"dev{i}" for i in ticks])
    ax.set_xlabel("destination device")
    ax.set_ylabel("source device")
    ax.set_title(title(doc, f"{doc.name}: P2P verdict and beta per ordered pair"))
    present = sorted({link.verdict for link in links}, key=verdicts.index)
    legend = [Patch(color=VERDICT_COLOURS[v], label=v) for v in present]
    if np.any(codes == len(verdicts)):
        legend.append(Patch(color=NOT_MEASURED_COLOUR, label="not measured"))
    fig.legend(handles=legend, loc="outside lower center", ncols=3, fontsize=8)
    return fig
