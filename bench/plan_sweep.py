"""How fast the planner sweeps: configurations (batch x cards x strategy) evaluated per second.

Target: 100,000 configurations in well under a second (one vectorised evaluation per strategy).
Prints the count, the best of several runs, and the rate; ``--json`` prints them as JSON.

    python bench/plan_sweep.py
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from gpucal.profiles.queries import resolve_gpu
from gpucal.plan import PRESETS, LinkSpec, sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best is reported")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    model = PRESETS["llama-3.1-70b"]
    gpu = resolve_gpu("h100-sxm").spec
    options = dict(batches=np.arange(1, 1025), cards=np.arange(1, 129), strategies=("pp", "tp", "hybrid"),
                   hybrid_tp=8, link=LinkSpec("nvlink4", 3e-6, 450e9), net=LinkSpec("ib400g", 2e-6, 50e9),
                   cards_per_host=8, context_tokens=4096)
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        result = sweep(model, gpu, **options)
        times.append(time.perf_counter() - start)
    best = min(times)
    report = {"configurations": len(result), "best_s": best, "median_s": float(np.median(times)),
              "configurations_per_s": len(result) / best, "target_s_for_100k": 1.0,
              "ratio_to_target": (best * 100_000 / len(result)) / 1.0}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['configurations']} configurations in {best * 1e3:.1f} ms (best of {args.repeat}, "
              f"median {report['median_s'] * 1e3:.1f} ms): {report['configurations_per_s']:.3g} configurations/s; "
              f"100,000 take {report['ratio_to_target']:.3f} of the 1 s target")


if __name__ == "__main__":
    main()
