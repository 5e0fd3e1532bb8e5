"""The figures of a profile, as PNG files: copy bandwidth, the P2P verdicts, the roofline, the planner's curves,
the network of a cluster, the decode-GEMM curve and the all-reduce on one host.

One module per figure, each a function that returns a matplotlib ``Figure`` and raises ``PlotSkipped``
(``gpucal.figures.common``) where the profile lacks the data:

- ``gpucal.figures.bandwidth``: ``bandwidth_figure(doc)``, copy bandwidth against size (``fits[]``);
- ``gpucal.figures.p2p``: ``p2p_figure(doc)``, the P2P verdict per ordered device pair (``links[]``);
- ``gpucal.figures.roofline``: ``roofline_figure(doc)``, the first device's roofline and kernels;
- ``gpucal.figures.plan``: ``plan_curves(doc)`` (the planner's numbers, as ``gpucal plan`` computes them) and
  ``plan_figure(doc, curves)``;
- ``gpucal.figures.network``: ``network_figure(doc)``, the network between hosts and the collectives;
- ``gpucal.figures.decode``: ``decode_gemm_figure(doc)``, weight bytes/s of the decode GEMM against the batch m
  per dtype with the fitted curve (``devices[].decode.gemm``), and ``allreduce_figure(doc)``, the all-reduce
  time against size per TP size on one host with its fit (``collectives[]``);
- ``gpucal.figures.common``: the canvas, titles, legends and fit curves they share;
- ``gpucal.figures.files``: ``check_plots_output`` and ``write_plots``, which write them as ``NAME.png``.

matplotlib is imported only when a figure is drawn (``gpucal.figures.common.canvas_figure``), and used without
pyplot: each figure is a ``matplotlib.figure.Figure`` on its own Agg canvas, so that no global state is shared
(thread-safe). Importing this package (``FIGURES``) or any of its modules does not need matplotlib.
See docs/plots.md.
"""

from __future__ import annotations

__all__ = ["FIGURES"]

FIGURES = ("bandwidth", "p2p", "roofline", "plan", "network", "decode-gemm", "allreduce")
