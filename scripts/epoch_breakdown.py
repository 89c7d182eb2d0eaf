#!/usr/bin/env python3
# Run from the repository root: python scripts/epoch_breakdown.py [THREADS]
"""Where the time of one configs/shd.yaml epoch goes (spoken-dev, 1000 samples), 2 threads."""
import time, numpy as np
from eventprop.config import resolve
from eventprop.train import load_data, build_spec, build_loss, n_steps_of, augment, evaluate
from eventprop.network import InitSpec, init_params
from eventprop.events import make_batch
from eventprop.losses import SpikeCountRegulariser, value_and_grad
from eventprop.engine import forward, backward, set_threads
from eventprop.optim import Adam
import sys
set_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
cfg = resolve("configs/shd.yaml", ["data.path=../shared/data/spoken-dev"])
data = load_data(cfg); tr = data["train"]
n_steps = n_steps_of(cfg); spec = build_spec(cfg, tr.n_units * 3, tr.n_classes); loss = build_loss(cfg)
params = init_params(spec, InitSpec(**cfg.model.init.model_dump()), seed=0)
reg = SpikeCountRegulariser(2e-7, 2e-7, 14.0); opt = Adam(6e-3)
T = dict(augment=0.0, batch=0.0, forward=0.0, loss_reg=0.0, backward=0.0, adam=0.0)
for ep in range(2):
    rng = np.random.default_rng([0, ep, 7])
    t0 = time.perf_counter(); ds = augment(cfg, tr, rng); order = rng.permutation(len(ds)); T["augment"] += time.perf_counter() - t0
    for i in range(0, len(order), 16):
        t0 = time.perf_counter()
        b = make_batch(ds, order[i:i+16], 1.0, n_steps, delay_copies=3, delay_ms=30.0)
        t1 = time.perf_counter()
        w = loss.weight(n_steps, 1.0, b)
        fw = forward(spec, params, b, weight=w, max_kinks=False)
        t2 = time.perf_counter()
        res = loss(fw, b.labels); rv, rg = reg(fw.spike_counts[:-1])
        from eventprop.engine import ReadoutGrads
        g = ReadoutGrads(res.grads.integral, None, None, None, rg)
        t3 = time.perf_counter()
        grads = backward(fw, g)
        t4 = time.perf_counter()
        opt.update(params, grads)
        t5 = time.perf_counter()
        if ep == 1:
            T["batch"] += t1 - t0; T["forward"] += t2 - t1; T["loss_reg"] += t3 - t2; T["backward"] += t4 - t3; T["adam"] += t5 - t4
    if ep == 1:
        t0 = time.perf_counter(); ev = evaluate(spec, params, data["test"], loss, n_steps, 256, 3, 30.0); te = time.perf_counter() - t0
tot = sum(T.values()) - T["augment"] / 2
print("epoch of 1000 samples (second epoch):", {k: round(v if k != "augment" else v / 2, 3) for k, v in T.items()}, "total", round(tot, 2), "s; test eval (360):", round(te, 2), "s; hidden spikes/neuron", round(float(fw.spike_counts[0].mean()), 1))
