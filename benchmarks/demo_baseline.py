"""Yardsticks for the demo's energy error: what the labels and a linear fit on the descriptor give without training.

On the ``graphdesc train --demo`` split (192 EMT frames, seed 0, 25 % validation):

* the spread of the validation energies per atom (RMS about their mean);
* the RMS error per atom of the per-type energy shift alone, fitted by least squares on the training frames
  (where a fresh model starts) and, for reference, on the validation frames themselves;
* the same for a linear least-squares fit on the frame-mean descriptor of the untrained ``small``-preset
  model (statistics fitted, seed 0) plus the per-type atom counts.

    python benchmarks/demo_baseline.py
"""

from __future__ import annotations

import sys

import numpy as np


def main() -> int:
    import torch

    from graphdesc.cli import _new_model
    from graphdesc.descriptor import dpa1_graph
    from graphdesc.train import GraphCache, emt_dataset, fit_statistics

    train_set, val_set = emt_dataset(192, seed=0).split(0.25, seed=0)

    def counts(ds):
        return np.stack([np.bincount(f.atype, minlength=len(ds.type_map)) for f in ds.frames]).astype(float)

    def energies(ds):
        return np.array([f.energy for f in ds.frames]), np.array([f.natoms for f in ds.frames], dtype=float)

    (e_tr, n_tr), (e_va, n_va) = energies(train_set), energies(val_set)
    rms = lambda x: 1e3 * float(np.sqrt(np.mean(x ** 2)))  # noqa: E731
    per_atom = e_va / n_va
    shift_tr = np.linalg.lstsq(counts(train_set), e_tr, rcond=None)[0]
    shift_va = np.linalg.lstsq(counts(val_set), e_va, rcond=None)[0]

    model, _ = _new_model(train_set, "small", seed=0)
    fit_statistics(model, train_set)
    params = model.params()["descriptor"]

    def features(ds):
        """Frame-mean descriptor of the untrained model, with the per-type atom fractions and a constant."""
        cache = GraphCache(ds, model.config.rcut)
        with torch.no_grad():
            means = [dpa1_graph(params, model.config.descriptor, b.graph, b.atype)[0].mean(0).numpy()
                     for b in (cache.batch([k]) for k in range(len(ds)))]
        return np.hstack([np.stack(means), counts(ds) / counts(ds).sum(1, keepdims=True)])

    weights = np.linalg.lstsq(features(train_set), e_tr / n_tr, rcond=None)[0]
    linear = features(val_set) @ weights - per_atom

    shift_only_tr = (e_va - counts(val_set) @ shift_tr) / n_va
    shift_only_va = (e_va - counts(val_set) @ shift_va) / n_va
    rows = [("validation energy per atom, RMS about the mean", per_atom - per_atom.mean()),
            ("per-type shift fitted on the training frames (a fresh model)", shift_only_tr),
            ("per-type shift fitted on the validation frames themselves", shift_only_va),
            ("linear fit on the untrained model's frame-mean descriptor", linear)]
    print(f"demo split: {len(train_set)} training, {len(val_set)} validation frames; RMS per atom on validation")
    for label, err in rows:
        print(f"  {label:62s} {rms(err):7.2f} meV/atom")
    return 0


if __name__ == "__main__":
    sys.exit(main())
