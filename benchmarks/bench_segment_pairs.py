"""Throughput of segment_softmax and center_edge_pairs (torch, CPU).

segment_softmax: E entries in ragged segments of 32..96 entries (mean 64,
unsorted ids), float64 and float32; next to ``torch.softmax`` over the same
data already padded to a dense ``(S, max_size)`` matrix (the best case for
the dense layout: padding itself not timed).

center_edge_pairs: center-major graphs of degree 60..96 (fcc Cu at rcut 6 has
78), sized to produce P ordered pairs (with self-pairs); compact form vs the
shape-static form padded to ``static_nnei = 96``.

Prints a Markdown table, writes JSON. Medians of repeated runs after warm-up.

    python benchmarks/bench_segment_pairs.py            # 1e4 .. 1e7
    python benchmarks/bench_segment_pairs.py --quick    # 1e4 .. 1e5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import numpy as np
import torch

from _timing import median_time

from graphdesc.examples import ragged_segments
from graphdesc.pairs import center_edge_pairs
from graphdesc.segment import segment_softmax

HERE = os.path.dirname(os.path.abspath(__file__))


def padded(ids: np.ndarray, num_segments: int, values: torch.Tensor):
    """The same data as a dense ``(S, width)`` matrix, padding ``-inf``."""
    order = np.argsort(ids, kind="stable")
    sizes = np.bincount(ids, minlength=num_segments)
    width = int(sizes.max())
    slot = np.arange(len(ids)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    dense = torch.full((num_segments, width), float("-inf"), dtype=values.dtype)
    dense[torch.from_numpy(ids[order]), torch.from_numpy(slot)] = values[torch.from_numpy(order)]
    return dense


def bench_softmax(n: int, dtype, repeats: int):
    ids_np, s = ragged_segments(n, 64, seed=n)
    ids = torch.from_numpy(ids_np)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(n, generator=gen, dtype=dtype)
    mask = torch.rand(n, generator=gen) < 0.9
    phantoms = torch.randint(0, 8, (s,), generator=gen).to(dtype)
    dense = padded(ids_np, s, logits)
    rows = {
        "segment_softmax": median_time(lambda: segment_softmax(logits, ids, s), repeats),
        "segment_softmax masked+phantom": median_time(
            lambda: segment_softmax(logits, ids, s, mask=mask, phantom_count=phantoms, phantom_logit=-20.0), repeats),
        "dense padded torch.softmax": median_time(lambda: torch.softmax(dense, dim=-1), repeats),
    }
    return {"entries": n, "segments": s, "dense_width": dense.shape[1], "dtype": str(dtype).replace("torch.", ""),
            "seconds": rows, "entries_per_s": {k: n / v for k, v in rows.items()}}


def bench_pairs(n_pairs: int, repeats: int, k: int = 96):
    rng = np.random.default_rng(n_pairs)
    deg = rng.integers(60, k + 1, size=max(n_pairs // 78**2, 1))
    n = len(deg)
    dst = torch.from_numpy(np.repeat(np.arange(n), deg))
    mask = torch.ones(len(dst), dtype=torch.bool)
    slots = np.arange(k)[None, :] < deg[:, None]  # static layout: deg real slots per center
    dst_s = torch.from_numpy(np.repeat(np.arange(n), k))
    mask_s = torch.from_numpy(slots.reshape(-1))
    real = int((deg**2).sum())
    rows = {
        "compact": median_time(lambda: center_edge_pairs(dst, mask, n), repeats),
        f"static (nnei={k})": median_time(lambda: center_edge_pairs(dst_s, mask_s, n, static_nnei=k), repeats),
    }
    return {"centers": n, "edges": len(dst), "real_pairs": real, "static_pairs": n * k * k,
            "seconds": rows, "real_pairs_per_s": {key: real / v for key, v in rows.items()}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes 1e4 and 1e5 only")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "segment_pairs.json"))
    args = parser.parse_args(argv)
    sizes = [10**4, 10**5] if args.quick else [10**4, 10**5, 10**6, 10**7]
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
            "python": sys.version.split()[0]}
    print(f"torch {meta['torch']}, {meta['threads']} threads, {meta['cpu']}\n")

    soft = []
    print("| entries | dtype | segment_softmax (entries/s) | masked+phantom | dense padded softmax | dense / graph time |")
    print("|---:|---|---:|---:|---:|---:|")
    for dtype in (torch.float64, torch.float32):
        for n in sizes:
            r = bench_softmax(n, dtype, args.repeats)
            soft.append(r)
            e, t = r["entries_per_s"], r["seconds"]
            print(f"| {n:.0e} | {r['dtype']} | {e['segment_softmax']:.3g} | {e['segment_softmax masked+phantom']:.3g} | "
                  f"{e['dense padded torch.softmax']:.3g} | {t['dense padded torch.softmax'] / t['segment_softmax']:.2f} |",
                  flush=True)

    pairs = []
    print("\n| real pairs | centers | compact (pairs/s) | static nnei=96 (pairs/s) |")
    print("|---:|---:|---:|---:|")
    for n in sizes:
        r = bench_pairs(n, args.repeats)
        pairs.append(r)
        p = r["real_pairs_per_s"]
        print(f"| {r['real_pairs']:.2e} | {r['centers']} | {p['compact']:.3g} | {p['static (nnei=96)']:.3g} |", flush=True)

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump({"meta": meta, "segment_softmax": soft, "center_edge_pairs": pairs}, fh, indent=2)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
