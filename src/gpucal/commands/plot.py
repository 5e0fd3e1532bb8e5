"""``gpucal plot``: a profile's figures as PNG files (copy bandwidth, P2P verdicts, roofline, plan, network).

The figures are drawn by ``gpucal.figures``; this command resolves the profile, passes the flags on and
says what it wrote and what it skipped (and why). Every PNG is written atomically, an existing one only with
``--force``, and every output is checked before any figure is drawn. Needs matplotlib
(``pip install 'gpucal[plot]'``).
"""

from __future__ import annotations

from gpucal import limits, render
from gpucal.commands.options import int_in, positive_int
from gpucal.figures import FIGURES  # no matplotlib: the figures import it when they draw
from gpucal.figures.files import write_plots
from gpucal.files import check_output_folder
from gpucal.profiles.names import resolve_document

__all__ = ["DESCRIPTION", "add_arguments", "run", "PLOTS_FORMAT"]

PLOTS_FORMAT = "gpucal.plots/1"


DESCRIPTION = ("Draw a profile's figures as PNG files: bandwidth.png (copy bandwidth against size, with the alpha-"
               "beta fits), p2p.png (the P2P verdict per device pair), roofline.png (the first device's roofline and "
               "kernels), plan.png (the planner's token latency and throughput against batch), network.png (a "
               "cluster profile's network between hosts and its collectives' busbw), decode-gemm.png (the decode "
               "GEMM's weight bytes/s against m, per shape) and allreduce.png (the one-host all-reduce's time "
               "against size, per TP size). Figures the profile has no data "
               "for are skipped, with the reason. Needs matplotlib.")


def add_arguments(p) -> None:
    """``gpucal plot``'s flags."""
    p.add_argument("profile", metavar="PROFILE", help="profile name (gpucal profiles list) or file")
    p.add_argument("-o", "--out", default="plots", metavar="DIR",
                   help="folder for the PNG files (default: plots); an existing PNG is kept unless --force")
    p.add_argument("--model", default="llama-3.1-8b", metavar="NAME|FILE",
                   help="model for plan.png (default llama-3.1-8b)")
    p.add_argument("--cards", type=positive_int, metavar="N",
                   help="cards for plan.png (default: the profile's device count)")
    p.add_argument("--strategy", choices=("pp", "tp"),
                   help="strategy for plan.png (default tp; pp where TP over the cards cannot divide the heads)")
    p.add_argument("--context", type=int_in(0, limits.MAX_CONTEXT_TOKENS), default=0, metavar="TOKENS",
                   help="tokens of context per sequence for plan.png (default 0, as gpucal plan)")
    p.add_argument("--only", metavar="LIST", help=f"figures to draw, comma-separated: {','.join(FIGURES)} (default all)")
    p.add_argument("--force", action="store_true", help="overwrite PNG files that exist in the folder")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def run(args) -> int:
    check_output_folder(args.out, flag="-o")  # an empty or impossible folder, before the profile is read
    doc = resolve_document(args.profile, "PROFILE", "profile")
    which = None if args.only is None else [w.strip() for w in args.only.split(",") if w.strip()]
    results = write_plots(doc, args.out, model=args.model, cards=args.cards, strategy=args.strategy, which=which,
                          context_tokens=args.context, force=args.force)
    if args.json:
        render.print_json({
            "schema": PLOTS_FORMAT,
            "profile": doc.origin,
            "out_dir": str(args.out),
            "figures": [{"name": name, "path": None if path is None else str(path), "skipped": reason}
                        for name, path, reason in results],
        })
        return 0
    out = render.console()
    for name, path, reason in results:
        render.line(f"wrote {path}" if path is not None else f"skipped {name}: {reason}", out)
    return 0
