"""The measured step against the machine: the decode-layer probe of a model, run on the card, beside what
``gpucal plan --step measured`` predicts for the same layer from the profile ``gpucal calibrate`` wrote there.

    python bench/plan_check.py --gpu PROFILE.json [--model llama-3.1-8b] [--batch 1,8,64] [--context 2048]
                               [--backend NAME] [--out FILE.json]

For each batch and mode (CUDA graphs, eager) it prints the probe's layer time (``layer_s``), the plan's layer
(``terms.layer_time_s``: one layer among layers, as the probe times one), their ratio, and the plan's whole token
latency. The plan within 5 % of the layer on every case is the target (printed, not fatal). Exit code 1 when a
probe case did not pass. ``--backend virtual:PROFILE`` runs it on the virtual machine (the test).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

TARGET = 0.05


def gpucal(*argv: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "gpucal", *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"plan_check: gpucal {' '.join(argv)}: {done.stderr.strip()}")
    return json.loads(done.stdout)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--gpu", required=True, help="the profile gpucal calibrate wrote on this machine")
    p.add_argument("--model", default="llama-3.1-8b")
    p.add_argument("--batch", default="1,8,64")
    p.add_argument("--context", default="2048")
    p.add_argument("--backend", default=None, help="gpucal's --backend (default: auto)")
    p.add_argument("--out", default=None, help="write every figure as JSON")
    args = p.parse_args(argv)
    backend = ["--backend", args.backend] if args.backend else []
    probe = gpucal("probe", "decode", *backend, "--model", args.model, "--tp", "1", "--batch", args.batch,
                   "--context", args.context, "--graph", "--json")
    rows, bad = [], []
    for case in probe["cases"]:
        if case["status"] != "passed":
            bad.append(f"{case['case']}: {case['status']}: {case.get('reason')}")
            continue
        graphs = case["mode"] == "graph"
        plan = gpucal("plan", "--gpu", args.gpu, "--model", args.model, "--cards", "1", "--strategy", "tp",
                      "--batch", str(case["batch"]), "--context", str(case["context"]), "--dtype", probe["dtype"],
                      "--step", "measured", "--graphs" if graphs else "--no-graphs", "--json")
        predicted = plan["terms"]["layer_time_s"]
        rows.append({"batch": case["batch"], "context": case["context"], "mode": case["mode"],
                     "layer_s": case["layer_s"], "plan_layer_s": predicted,
                     "plan_over_layer": predicted / case["layer_s"], "plan_token_latency_s": plan["token_latency_s"],
                     "fallbacks": plan["fallbacks"]})
    print(f"{'batch':>5} {'mode':>6} {'probe layer':>12} {'plan layer':>12} {'plan/probe':>10} {'plan token':>11}")
    for r in rows:
        print(f"{r['batch']:>5} {r['mode']:>6} {r['layer_s'] * 1e6:>10.2f}us {r['plan_layer_s'] * 1e6:>10.2f}us "
              f"{r['plan_over_layer']:>10.3f} {r['plan_token_latency_s'] * 1e3:>9.3f}ms")
    missed = [r for r in rows if abs(r["plan_over_layer"] - 1) > TARGET]
    print(f"target: the plan's layer within {TARGET:.0%} of the probe's: "
          + ("met" if rows and not missed else f"missed in {len(missed)} of {len(rows)} cases"))
    for line in bad:
        print(f"not passed: {line}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"model": args.model, "profile": args.gpu, "simulated": probe.get("simulated"),
                       "rows": rows, "not_passed": bad}, f, indent=2)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
