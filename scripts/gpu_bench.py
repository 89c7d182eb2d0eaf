"""GPU benchmark (scripts/gpu_bench.sh): the cuda backend against the cpu backend and a dense
torch BPTT network on the same GPU, on the SHD-shaped workload of ``eventprop bench``
(eventprop.bench.shd_like: 700 inputs, 20 leaky-integrator outputs, dt 1 ms, 1400 steps, batch
32, loss sum_exp with the spike-count regulariser, Adam).

For 256 and 512 hidden, feed-forward and recurrent: seconds per training step (forward, loss,
backward, optimiser; median over repeats after a warm-up step that also compiles the kernels),
seconds per SHD epoch (x ceil(8156 / 32) batches), device memory in use (numba's context:
total - free) and, for torch, its peak allocated memory. Results are printed as they come, and
written (after every measurement) to $OUT/gpu_bench.json when OUT is set, else ./gpu_bench.json.

Fails at once, with a one-line message, when no CUDA device is usable. ``--dry-run``: tiny sizes,
one repeat, runs under numba's CUDA simulator too (NUMBA_ENABLE_CUDASIM=1; used by the tests).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

SHD_TRAIN = 8156


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 512])
    p.add_argument("--modes", nargs="+", default=["ffwd", "recurrent"], choices=["ffwd", "recurrent"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=1400)
    p.add_argument("--spikes", type=float, default=11000.0, help="input spikes per sample (mean)")
    p.add_argument("--w-in", type=float, default=0.013)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--cpu-repeats", type=int, default=3)
    p.add_argument("--torch-repeats", type=int, default=3)
    p.add_argument("--no-cpu", action="store_true")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--budget-s", type=float, default=270.0, help="skip what would start after this many seconds")
    p.add_argument("--out", default=None, help="JSON file (default: $OUT/gpu_bench.json, else ./gpu_bench.json)")
    p.add_argument("--dry-run", action="store_true", help="tiny sizes, one repeat (works under the simulator)")
    a = p.parse_args(argv)
    if a.dry_run:
        a.hidden, a.modes, a.batch, a.steps, a.spikes = [6], ["recurrent"], 2, 20, 120.0
        sys.setswitchinterval(1e-4)  # (the simulator's threads meet at every barrier)
        a.repeats = a.cpu_repeats = a.torch_repeats = 1
        a.w_in = 0.3
    if a.out is None:
        a.out = os.path.join(os.environ.get("OUT") or ".", "gpu_bench.json")
    return a


def device_info() -> dict:
    """Fails fast (SystemExit with one line) when no device is usable."""
    from eventprop.engine.registry import cuda_usable

    if not cuda_usable():
        raise SystemExit("gpu_bench: no usable CUDA device (needs an NVIDIA GPU, its driver and numba-cuda: "
                         "pip install 'eventprop[cuda]')")
    from numba import cuda

    from eventprop.engine.cuda import simulator

    if simulator():
        return {"name": "numba CUDA simulator", "simulator": True}
    dev = cuda.get_current_device()
    free, total = cuda.current_context().get_memory_info()
    return {"name": dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name),
            "compute_capability": list(dev.compute_capability), "total_mb": total / 2**20, "simulator": False}


def device_used_mb() -> float | None:
    from numba import cuda

    try:
        free, total = cuda.current_context().get_memory_info()
        used = (total - free) / 2**20
    except Exception:  # pragma: no cover
        return None
    return used if math.isfinite(used) else None  # (the simulator has no memory info)


def make_problem(a, hidden, recurrent):
    from eventprop.bench import shd_like
    from eventprop.events import make_batch
    from eventprop.network import InitSpec, LayerSpec, NetworkSpec, OutputSpec, init_params

    ds = shd_like(a.batch * 2, a.steps, 1.0, a.spikes, seed=1)
    spec = NetworkSpec(700, [LayerSpec(hidden, 20.0, 5.0, 1.0, recurrent)], OutputSpec(20), dt=1.0)
    params = init_params(spec, InitSpec(input_mean=a.w_in, input_sd=0.01, rec_sd=0.02, out_sd=0.03), seed=0)
    batches = [make_batch(ds, np.arange(i * a.batch, (i + 1) * a.batch), 1.0, a.steps) for i in range(2)]
    return spec, params, batches


def time_eventprop(a, backend, hidden, recurrent, repeats) -> dict:
    import dataclasses

    from eventprop.losses import SpikeCountRegulariser, get_loss, value_and_grad
    from eventprop.optim import Adam

    spec, params, batches = make_problem(a, hidden, recurrent)
    spec = dataclasses.replace(spec, backend=backend)
    loss, reg, opt = get_loss("sum_exp"), SpikeCountRegulariser(1e-7, 1e-7, 14.0), Adam(1e-3)
    t0 = time.perf_counter()
    value_and_grad(spec, params, batches[0], loss, reg)  # warm-up: compiles (cuda) or loads the kernels
    warm = time.perf_counter() - t0
    times, hid, ph = [], [], {}
    for r in range(repeats):
        t0 = time.perf_counter()
        _, g, _, fw = value_and_grad(spec, params, batches[r % 2], loss, reg, timings=ph)
        opt.update(params, g)
        times.append(time.perf_counter() - t0)
        hid.append(float(fw.spike_counts[0].mean()))
    spb = float(np.median(times))
    out = {"seconds_per_batch": spb, "seconds_per_epoch": spb * math.ceil(SHD_TRAIN / a.batch),
           "warmup_s": warm, "phases_s_per_batch": {k: v / repeats for k, v in ph.items()},
           "hidden_spikes_per_neuron": float(np.mean(hid))}
    if backend == "cuda":
        out["device_used_mb"] = device_used_mb()
    return out


def time_torch(a, hidden, recurrent, repeats) -> dict | None:
    """Dense surrogate-gradient BPTT of the same network on the GPU (eventprop.bench's torch
    baseline, moved to the device)."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    from eventprop.bench import shd_like
    from eventprop.events import make_batch

    dev = torch.device("cuda")
    torch.manual_seed(0)
    B, N, H = a.batch, a.steps, hidden
    ds = shd_like(B * 2, N, 1.0, a.spikes, seed=1)
    data = []
    for i in range(2):
        sb = make_batch(ds, np.arange(i * B, (i + 1) * B), 1.0, N)
        x = np.zeros((N, B, 700), dtype=np.float32)
        for b in range(B):
            for n in range(N):
                x[n, b, sb.units[sb.ptr[b, n]:sb.ptr[b, n + 1]]] = 1.0
        data.append((torch.from_numpy(x).to(dev), torch.from_numpy(sb.labels).long().to(dev)))
    from eventprop.bench import dense_bptt

    readout, opt = dense_bptt(torch, B, N, H, recurrent, a.w_in, device=dev)

    def step(x, y):
        loss = torch.nn.functional.cross_entropy(readout(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    torch.cuda.reset_peak_memory_stats()
    step(*data[0])
    torch.cuda.synchronize()
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        step(*data[r % 2])
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    spb = float(np.median(times))
    out = {"seconds_per_batch": spb, "seconds_per_epoch": spb * math.ceil(SHD_TRAIN / B),
           "peak_allocated_mb": torch.cuda.max_memory_allocated() / 2**20}
    data = step = readout = opt = None  # let the device memory go
    torch.cuda.empty_cache()
    return out


def main(argv=None) -> int:
    a = parse_args(argv)
    t_start = time.perf_counter()
    res = {"device": device_info(), "workload": {"batch": a.batch, "steps": a.steps, "spikes": a.spikes,
                                                 "shd_train": SHD_TRAIN, "dry_run": a.dry_run}, "results": []}
    try:
        import numba

        res["numba"] = numba.__version__
    except Exception:  # pragma: no cover
        pass
    res["cpu_threads"] = numba.config.NUMBA_NUM_THREADS
    print(f"gpu_bench: device {res['device']['name']}; batch {a.batch}, {a.steps} steps; results -> {a.out}",
          flush=True)

    def save():
        d = os.path.dirname(os.path.abspath(a.out))
        os.makedirs(d, exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)

    save()
    for hidden in a.hidden:
        for mode in a.modes:
            rec = mode == "recurrent"
            for impl in ("cuda", "cpu", "torch"):
                if impl == "cpu" and a.no_cpu or impl == "torch" and a.no_torch:
                    continue
                elapsed = time.perf_counter() - t_start
                if elapsed > a.budget_s:
                    print(f"  skipped {impl} {hidden} {mode}: over the {a.budget_s:.0f} s budget", flush=True)
                    continue
                try:
                    if impl == "torch":
                        r = time_torch(a, hidden, rec, a.torch_repeats)
                        if r is None:
                            print("  torch with CUDA not available: no BPTT baseline", flush=True)
                            a.no_torch = True
                            continue
                    else:
                        r = time_eventprop(a, impl, hidden, rec, a.repeats if impl == "cuda" else a.cpu_repeats)
                except Exception as e:  # keep going: one failure must not lose the other numbers
                    r = {"error": f"{type(e).__name__}: {e}"}
                r = {"impl": impl, "hidden": hidden, "mode": mode, **r}
                res["results"].append(r)
                save()
                if "error" in r:
                    print(f"  {impl:5s} {hidden:4d} {mode:9s} ERROR {r['error']}", flush=True)
                else:
                    mem = r.get("device_used_mb") or r.get("peak_allocated_mb")
                    print(f"  {impl:5s} {hidden:4d} {mode:9s} {r['seconds_per_batch']:.4f} s/batch "
                          f"{r['seconds_per_epoch']:.2f} s/SHD-epoch" + (f"  device {mem:.0f} MiB" if mem else ""),
                          flush=True)
    res["wall_s"] = time.perf_counter() - t_start
    save()
    print(f"gpu_bench: done in {res['wall_s']:.0f} s", flush=True)
    return 1 if any("error" in r for r in res["results"]) else 0


if __name__ == "__main__":
    sys.exit(main())
