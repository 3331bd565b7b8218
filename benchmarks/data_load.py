"""Archive load time: first load (cold cache) and cached load of a whole image archive (train + test).

    python benchmarks/data_load.py ARCHIVE [--repeats 5]

ARCHIVE is any image-folder archive `load_dataset` reads, e.g. the real CIFAR-10 JPEG archive (60,000 images).
The cache lives in a fresh temporary directory, so the first load really decodes every image; the cached
loads then read the .npz files the first load wrote. Goals (issue 2): first ≤ 60 s, cached ≤ 2 s on 2 cores.
Prints per-split times, the medians of the cached loads, and the cold/cached ratio.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nin_edge.data import load_dataset  # noqa: E402

SPLITS = ("train", "test")


def load_all(archive: Path, cache_dir: Path) -> tuple[float, dict[str, float], int]:
    per, n = {}, 0
    t0 = time.perf_counter()
    for split in SPLITS:
        t = time.perf_counter()
        ds = load_dataset(archive, split, cache_dir=cache_dir)
        per[split] = time.perf_counter() - t
        n += len(ds)
    return time.perf_counter() - t0, per, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("archive", type=Path)
    ap.add_argument("--repeats", type=int, default=5, help="cached loads to take the median of")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="nin-edge-bench-cache-") as tmp:
        cache = Path(tmp)
        first, first_per, n = load_all(a.archive, cache)
        print(f"first load (cold cache): {first:.2f} s for {n} images "
              f"({', '.join(f'{k} {v:.2f} s' for k, v in first_per.items())})")
        cached, cached_per = [], {s: [] for s in SPLITS}
        for _ in range(a.repeats):
            t, per, n2 = load_all(a.archive, cache)
            assert n2 == n, f"cached load returned {n2} images, first load {n}"
            cached.append(t)
            for s in SPLITS:
                cached_per[s].append(per[s])
        med = statistics.median(cached)
        print(f"cached load: median {med:.3f} s over {a.repeats} (min {min(cached):.3f}, max {max(cached):.3f}; "
              f"{', '.join(f'{s} {statistics.median(v):.3f} s' for s, v in cached_per.items())})")
        print(f"first/cached ratio: {first / med:.1f}x; goals: first <= 60 s {'met' if first <= 60 else 'MISSED'}, "
              f"cached <= 2 s {'met' if med <= 2 else 'MISSED'}")


if __name__ == "__main__":
    main()
