#!/usr/bin/env python3
# Run from the repository root: python scripts/ssc_memory.py [FOLDER] [N_SAMPLES] [SPIKES_PER_SAMPLE]
"""Memory of an SSC-sized training set held on the grid (data.on_grid).

Writes an SSC-layout file of N_SAMPLES (default 75,466, SSC's training set) samples with
SPIKES_PER_SAMPLE (default 8,000) random spikes each (float32 seconds in [0, 1), uint16 units),
unless FOLDER/ssc_train.h5 exists, then reads it in a fresh process with grid=(2 ms, 500 steps)
(the published SSC model) and prints the dataset's bytes and the process's peak resident memory.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

folder = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/ssc_memory")
n = int(sys.argv[2]) if len(sys.argv) > 2 else 75466
k = int(sys.argv[3]) if len(sys.argv) > 3 else 8000
path = folder / "ssc_train.h5"
if not path.is_file():
    import h5py

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with h5py.File(path.with_suffix(".part"), "w") as f:
        dt_ = f.create_dataset("spikes/times", shape=(n,), dtype=h5py.vlen_dtype(np.float32))
        du = f.create_dataset("spikes/units", shape=(n,), dtype=h5py.vlen_dtype(np.uint16))
        for a in range(0, n, 1000):
            b = min(n, a + 1000)
            t = np.sort(rng.random((b - a, k), dtype=np.float32), axis=1)
            u = rng.integers(0, 700, (b - a, k), dtype=np.uint16)
            dt_[a:b] = list(t)
            du[a:b] = list(u)
        f.create_dataset("labels", data=rng.integers(0, 35, n).astype(np.uint16))
    os.replace(path.with_suffix(".part"), path)
    print(f"wrote {path}: {path.stat().st_size / 2**30:.2f} GiB", flush=True)

child = f"""
import resource, time
from eventprop.data import read_hsd_file
t0 = time.perf_counter()
ds = read_hsd_file({str(path)!r}, grid=(2.0, 500))
sec = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print(f"{{len(ds)}} samples, {{len(ds.times) / 1e6:.0f}} M spikes on the grid: dataset {{ds.nbytes() / 2**30:.2f}} GiB "
      f"({{ds.nbytes() / len(ds.times):.2f}} bytes/spike; float64 times + int32 units would be "
      f"{{(12 * len(ds.times) + ds.offsets.nbytes) / 2**30:.2f}} GiB); peak resident memory of the reading "
      f"process {{peak:.2f}} GiB; read + binned in {{sec:.0f}} s")
"""
subprocess.run([sys.executable, "-c", child], check=True)
