"""The ``graphdesc`` command line."""

from __future__ import annotations

import argparse
import json
import sys

from . import __version__


def _demo(args) -> int:
    from .demo import TOLERANCE, format_rows, run_demo

    print(f"graphdesc {__version__} demo: DPA1 descriptor, edge graph vs dense reference")
    print(f"periodic fcc Cu, {args.cells}^3 cells, rcut {args.cutoff} A, attn_layer 2, float64, "
          f"median of {args.repeats} runs\n", flush=True)
    rows = run_demo(args.backend, ncell=args.cells, cutoff=args.cutoff, repeats=args.repeats)
    print(format_rows(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
        print(f"\nwrote {args.json}")
    bad = [r["backend"] for r in rows if r.get("max_abs_err", 0.0) > TOLERANCE]
    if bad:
        print(f"\nFAIL: graph and dense disagree beyond {TOLERANCE:g} on {', '.join(bad)}", file=sys.stderr)
        return 1
    print(f"\nOK: graph == dense within {TOLERANCE:g} on every installed backend")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphdesc", description=__doc__)
    parser.add_argument("--version", action="version", version=f"graphdesc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="run the built-in demo (graph vs dense, every backend)",
                          description="The DPA1 descriptor on periodic fcc Cu: edge graph vs dense reference.")
    demo.add_argument("--backend", action="append", choices=["numpy", "torch", "jax"],
                      help="backend to run (repeatable; default: all installed)")
    demo.add_argument("--cells", type=int, default=4, help="fcc cells per side (4 -> 256 atoms; default 4)")
    demo.add_argument("--cutoff", type=float, default=6.0, help="cutoff radius in Angstrom (default 6.0)")
    demo.add_argument("--repeats", type=int, default=2, help="timed runs per path (default 2)")
    demo.add_argument("--json", metavar="PATH", help="also write the table as JSON")
    demo.set_defaults(func=_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
