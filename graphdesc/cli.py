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


def _load_model(path):
    """An EnergyModel from a graphdesc checkpoint (.npz) or a DeePMD-kit model file."""
    from pathlib import Path

    from .torch import EnergyModel

    if Path(path).suffix == ".npz":
        return EnergyModel.load(path)
    return EnergyModel.from_deepmd(path)


def _export(args) -> int:
    from .export import export_package

    model = _load_model(args.model)
    print(f"graphdesc {__version__} export: {args.model} -> {args.output} ({args.device}, "
          f"{args.dtype or model.config.precision})", flush=True)
    path = export_package(model, args.output, device=args.device, dtype=args.dtype,
                          progress=lambda msg: print(msg, flush=True))
    print(f"wrote {path}")
    return 0


def _eval(args) -> int:
    import numpy as np
    from ase.io import read

    from .ase import Calculator

    source = args.model if args.model.endswith(".pt2") else _load_model(args.model)
    calc = Calculator(source, type_map=args.type_map.split(",") if args.type_map else None)
    frames = read(args.structure, index=args.index)
    frames = frames if isinstance(frames, list) else [frames]
    results = []
    for i, atoms in enumerate(frames):
        atoms.calc = calc
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
        row = {"frame": i, "natoms": len(atoms), "energy": energy, "energy_per_atom": energy / len(atoms),
               "forces": forces.tolist()}
        if atoms.pbc.all():
            row["stress"] = atoms.get_stress().tolist()
        results.append(row)
        print(f"frame {i}: {len(atoms)} atoms  energy {energy:.10f} eV  ({energy / len(atoms):.10f} eV/atom)  "
              f"max |F| {np.abs(forces).max():.6f} eV/A")
        if args.forces:
            for symbol, f in zip(atoms.get_chemical_symbols(), forces):
                print(f"  {symbol:3s} {f[0]: .10f} {f[1]: .10f} {f[2]: .10f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
        print(f"wrote {args.json}")
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

    export = sub.add_parser("export", help="compile a model to an AOTInductor .pt2 package for MD codes",
                            description="Trace energy + forces (make_fx), export (torch.export) and compile "
                                        "(AOTInductor) a model to a .pt2 package; N, E and frames stay dynamic.")
    export.add_argument("model", help="graphdesc checkpoint (.npz) or DeePMD-kit model (.pkl/.json/.yaml/.dp)")
    export.add_argument("-o", "--output", required=True, metavar="OUT.pt2", help="package to write")
    export.add_argument("--device", default="cpu", help="cpu or cuda (default cpu): where the package runs")
    export.add_argument("--dtype", choices=["float64", "float32"], help="package precision (default: the model's)")
    export.set_defaults(func=_export)

    ev = sub.add_parser("eval", help="energies and forces of a structure file (any ASE-readable format)",
                        description="Evaluate a model or .pt2 package on every frame of a structure file.")
    ev.add_argument("model", metavar="MODEL_OR_PT2", help="checkpoint (.npz), DeePMD-kit model file or .pt2 package")
    ev.add_argument("structure", metavar="STRUCTURE_FILE", help="structure file readable by ase.io.read")
    ev.add_argument("--index", default=":", help="frames to read, ASE syntax (default ':' = all)")
    ev.add_argument("--type-map", help="comma-separated element per model type (default: the model's type_map)")
    ev.add_argument("--forces", action="store_true", help="also print every atom's force")
    ev.add_argument("--json", metavar="PATH", help="write energies, forces (and stress) as JSON")
    ev.set_defaults(func=_eval)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
