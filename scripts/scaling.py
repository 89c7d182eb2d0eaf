#!/usr/bin/env python3
# Run from the repository root: python scripts/scaling.py OUT.json
"""Seconds per training step (forward + backward + regulariser; no Adam) against hidden size, input
spikes and steps; the published model size. Recurrent, batch 32, 2 threads."""
import time, json, sys, numpy as np
from eventprop.bench import shd_like
from eventprop.network import NetworkSpec, LayerSpec, OutputSpec, InitSpec, init_params
from eventprop.events import make_batch
from eventprop.engine import set_threads
from eventprop.losses import get_loss, value_and_grad, SpikeCountRegulariser
set_threads(2)
loss = get_loss("sum_exp"); reg = SpikeCountRegulariser(1e-7, 1e-7, 14.0)
def measure(H=256, spikes=11000, steps=1400, dt=1.0, copies=1, delay=30.0, w_in=0.013, reps=3):
    ds = shd_like(32, steps, dt, spikes, seed=1)
    spec = NetworkSpec(700 * copies, [LayerSpec(H, 20.0, 5.0, 1.0, True)], OutputSpec(20), dt=dt)
    p = init_params(spec, InitSpec(input_mean=w_in, input_sd=w_in * 0.77, rec_mean=0.0, rec_sd=0.02 * np.sqrt(256 / H), out_mean=0.0, out_sd=0.03), seed=0)
    b = make_batch(ds, np.arange(32), dt, steps, delay_copies=copies, delay_ms=delay)
    value_and_grad(spec, p, b, loss, reg)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); _, _, _, fw = value_and_grad(spec, p, b, loss, reg); ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), float(fw.spike_counts[0].mean()), float(b.counts().mean())
out = {}
for H in (128, 256, 512, 1024):
    out[f"H{H}"] = measure(H=H); print("H", H, out[f"H{H}"], flush=True)
for sp in (5500, 22000):
    out[f"S{sp}"] = measure(spikes=sp); print("spikes", sp, out[f"S{sp}"], flush=True)
for st in (700, 2800):
    out[f"N{st}"] = measure(steps=st); print("steps", st, out[f"N{st}"], flush=True)
out["published"] = measure(H=512, spikes=11000, steps=500, dt=2.0, copies=11, w_in=0.0025)
print("published", out["published"], flush=True)
json.dump(out, open(sys.argv[1], "w"))
