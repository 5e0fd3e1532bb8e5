"""``gpucal report``: one self-contained HTML page of a profile (``gpucal.figures.report``): the machine, its
figures against the datasheet with every anomaly, the P2P verdicts with their evidence, the figures of ``gpucal
plot``, the decode step's terms and the plan with both steps, and a cluster's network. Written atomically; an
existing file only with ``--force``. Needs matplotlib for the figures (``pip install 'gpucal[plot]'``)."""

from __future__ import annotations

from gpucal import render
from gpucal.commands.options import nonempty, positive_int
from gpucal.figures.report import SECTIONS, check_report_output, default_model, write_report
from gpucal.profiles.names import resolve_document
from gpucal.profiles.queries import resolve_model

__all__ = ["DESCRIPTION", "add_arguments", "run"]

DESCRIPTION = ("Write one self-contained HTML page of a profile, to look at and share: the machine and how it was "
               "measured, its figures against the datasheet and every anomaly, the P2P verdicts with their evidence, "
               "the figures (bandwidth, roofline, decode GEMM, all-reduce, plan), the decode step's terms and the "
               "plan with the measured and the article's step side by side, a cluster's network and collectives. "
               "No network access is needed to view it: the images are embedded and it has no script.")


def add_arguments(p) -> None:
    """``gpucal report``'s flags."""
    p.add_argument("profile", metavar="PROFILE", help="profile name (gpucal profiles list) or file")
    p.add_argument("-o", "--output", type=nonempty, metavar="FILE.html",
                   help="the page to write (default: <profile name>.html here); an existing file is kept unless "
                        "--force")
    p.add_argument("--model", type=nonempty, metavar="NAME|FILE",
                   help="the model of the plan (default: the largest preset whose weights fit the profile's cards)")
    p.add_argument("--cards", type=positive_int, metavar="N", help="cards for the plan (default: the profile's)")
    p.add_argument("--strategy", choices=("pp", "tp"),
                   help="strategy for the plan (default tp; pp where TP over the cards cannot divide the heads)")
    p.add_argument("--force", action="store_true", help="overwrite the file if it exists")
    p.add_argument("--json", action="store_true", help="print one JSON object describing the page written")
    p.set_defaults(run=run)


def run(args) -> int:
    doc = resolve_document(args.profile, "PROFILE", "profile")
    path = args.output or f"{doc.name}.html"
    check_report_output(path, force=args.force, flag="-o")
    model = resolve_model(args.model) if args.model else default_model(doc, args.cards)
    written = write_report(doc, path, model=model, cards=args.cards, strategy=args.strategy, force=args.force)
    if args.json:
        render.print_json({"file": str(written), "profile": doc.origin, "source": doc.profile.source,
                           "model": model.name, "sections": list(SECTIONS), "bytes": written.stat().st_size})
    else:
        render.line(f"wrote {written} (the {doc.profile.source} profile {doc.name}; plan for {model.name})")
    return 0
