"""Throughput of segment_softmax and center_edge_pairs (torch, CPU).

segment_softmax: E entries in ragged segments of 32..96 entries (mean 64,
unsorted ids), float64 and float32; next to ``torch.softmax`` over the same
data already padded to a dense ``(S, max_size)`` matrix (the best case for
the dense layout: padding itself not timed).

center_edge_pairs: center-major graphs of degree 60..96 (fcc Cu at rcut 6 has
78), sized to produce P ordered pairs (with self-pairs); compact form vs the
shape-static form padded to ``static_nnei = 96``.

Prints Markdown tables, writes JSON and the tables as ``.md`` beside it. Medians of repeated runs after warm-up.

    python benchmarks/bench_segment_pairs.py            # 1e4 .. 1e7
    python benchmarks/bench_segment_pairs.py --quick    # 1e4 .. 1e5
    python benchmarks/bench_segment_pairs.py --report benchmarks/results/segment_pairs.json   # re-render the .md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys

from _timing import median_time, rerender, save_results  # first: graphdesc before torch

import numpy as np
import torch  # noqa: I001

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


SOFTMAX_HEAD = ("| entries | dtype | segment_softmax (entries/s) | masked+phantom | dense padded softmax "
                "| dense / graph time |\n|---:|---|---:|---:|---:|---:|")
PAIRS_HEAD = "| real pairs | centers | compact (pairs/s) | static nnei=96 (pairs/s) |\n|---:|---:|---:|---:|"


def softmax_row(r: dict) -> str:
    e, t = r["entries_per_s"], r["seconds"]
    return (f"| {r['entries']:.0e} | {r['dtype']} | {e['segment_softmax']:.3g} | "
            f"{e['segment_softmax masked+phantom']:.3g} | {e['dense padded torch.softmax']:.3g} | "
            f"{t['dense padded torch.softmax'] / t['segment_softmax']:.2f} |")


def pairs_row(r: dict) -> str:
    p = r["real_pairs_per_s"]
    return f"| {r['real_pairs']:.2e} | {r['centers']} | {p['compact']:.3g} | {p['static (nnei=96)']:.3g} |"


def markdown(result: dict) -> str:
    meta = result["meta"]
    return "\n".join([
        f"`python benchmarks/bench_segment_pairs.py`, torch {meta['torch']}, {meta['threads']} threads, {meta['cpu']}, "
        f"{meta.get('date', 'undated')}; medians, entries/s and pairs/s (higher is faster).", "",
        SOFTMAX_HEAD, *map(softmax_row, result["segment_softmax"]), "",
        PAIRS_HEAD, *map(pairs_row, result["center_edge_pairs"])]) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes 1e4 and 1e5 only")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "segment_pairs.json"))
    parser.add_argument("--report", metavar="JSON", help="only re-render the .md of an earlier run")
    args = parser.parse_args(argv)
    if args.report:
        return rerender(args.report, markdown)
    sizes = [10**4, 10**5] if args.quick else [10**4, 10**5, 10**6, 10**7]
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
            "python": sys.version.split()[0], "date": datetime.date.today().isoformat()}
    print(f"torch {meta['torch']}, {meta['threads']} threads, {meta['cpu']}\n")

    soft = []
    print(SOFTMAX_HEAD)
    for dtype in (torch.float64, torch.float32):
        for n in sizes:
            soft.append(bench_softmax(n, dtype, args.repeats))
            print(softmax_row(soft[-1]), flush=True)

    pairs = []
    print("\n" + PAIRS_HEAD)
    for n in sizes:
        pairs.append(bench_pairs(n, args.repeats))
        print(pairs_row(pairs[-1]), flush=True)
    save_results({"meta": meta, "segment_softmax": soft, "center_edge_pairs": pairs}, args.out, markdown)

if __name__ == "__main__":
    main()
