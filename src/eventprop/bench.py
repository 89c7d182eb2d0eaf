"""Speed and memory benchmark on an SHD-shaped workload (``eventprop bench``).

Workload (the generator is :func:`shd_like`): 700 inputs -> 256 hidden LIF (optionally 256x256
recurrent) -> 20 leaky-integrator outputs, dt = 1 ms, 1400 steps, batch 32, tau_mem 20 ms,
tau_syn 5 ms, loss sum_exp. Synthetic input that looks like SHD to the engine: each sample is
2-4 "syllables" (bursts of 80-300 ms); within a burst, activity sits in 3-6 drifting frequency
bands (Gaussian profiles over the 700 channels, widths 15-60 channels) with Poisson spikes, at
most one per channel and step; the per-sample rate is scaled so that a sample has ``spikes``
input spikes on average (default 11,000; real SHD samples have about 9,000). Input weights are
drawn so that hidden neurons fire about 14 spikes per trial, as in trained SHD networks.

Each measurement runs in its own child process (so peak memory is per implementation) and
reports seconds per training step (forward, backward, optimiser; median over repeats), seconds
per SHD epoch (x 8156/32 batches) and peak resident memory of the process, plus the "working"
memory above the process's footprint after imports and warm-up. The BPTT baselines are a dense
PyTorch surrogate-gradient network of the same shape, and the same network written with snnTorch
as its users write it (torch and snntorch are the optional ``bench`` extra).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

SHD_TRAIN = 8156
SHD_TEST = 2264


def shd_like(n_samples: int, n_steps: int = 1400, dt: float = 1.0, spikes: float = 11000.0, n_units: int = 700,
             seed: int = 0, active_ms: float | None = None):
    """Synthetic bursty SHD-shaped spike data as an EventDataset (see module docstring)."""
    from .events import EventDataset

    rng = np.random.default_rng(seed)
    T = n_steps * dt
    span = min(T, active_ms or 1100.0)
    ch = np.arange(n_units)
    times, units, counts = [], [], []
    for _ in range(n_samples):
        rate = np.zeros((n_steps, n_units), dtype=np.float32)
        t0 = rng.uniform(0, 0.1 * span)
        for _s in range(rng.integers(2, 5)):
            dur = rng.uniform(80, 300)
            a = int(t0 / dt)
            b = min(int((t0 + dur) / dt), n_steps)
            if a >= n_steps:
                break
            for _band in range(rng.integers(3, 7)):
                c0 = rng.uniform(0, n_units)
                drift = rng.uniform(-0.5, 0.5) * dt
                width = rng.uniform(15, 60)
                tt = np.arange(b - a)[:, None]
                centre = c0 + drift * tt
                rate[a:b] += np.exp(-0.5 * ((ch[None, :] - centre) / width) ** 2) * rng.uniform(0.5, 1.5)
            t0 += dur + rng.uniform(10, 80)
            if t0 > span:
                break
        rate *= spikes / max(rate.sum(), 1e-9)
        p = 1.0 - np.exp(-rate)  # at most one spike per channel and step
        s, u = np.nonzero(rng.random(rate.shape) < p)
        times.append(s * dt + rng.uniform(0, dt, len(s)) * 0.999)
        units.append(u)
        counts.append(len(s))
    return EventDataset.from_lists(times, units, rng.integers(0, 20, n_samples), n_units, 20, name="shd_like")


def _rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_mb() -> float:
    """Current resident memory (MB), from /proc where available."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # pragma: no cover
        return _rss_mb()


def _worker_eventprop(args) -> dict:
    from .engine import set_threads
    from .events import make_batch
    from .losses import SpikeCountRegulariser, get_loss, value_and_grad
    from .network import InitSpec, LayerSpec, NetworkSpec, OutputSpec, init_params
    from .optim import Adam

    set_threads(args["threads"])
    ds = shd_like(args["batch"] * 2, args["steps"], 1.0, args["spikes"], seed=1, active_ms=args.get("active_ms"))
    spec = NetworkSpec(700, [LayerSpec(args["hidden"], 20.0, 5.0, 1.0, args["recurrent"])], OutputSpec(20), dt=1.0)
    params = init_params(spec, InitSpec(input_mean=args["w_in"], input_sd=0.01, rec_sd=0.02, out_sd=0.03), seed=0)
    loss = get_loss("sum_exp")
    reg = SpikeCountRegulariser(1e-7, 1e-7, 14.0)
    opt = Adam(1e-3)
    batches = [make_batch(ds, np.arange(i * args["batch"], (i + 1) * args["batch"]), 1.0, args["steps"]) for i in range(2)]
    base = _current_mb()  # after imports, data and parameters; before any training step
    _, g, res, fw = value_and_grad(spec, params, batches[0], loss, reg)  # warm-up (loads cached kernels)
    times = []
    hid = []
    for r in range(args["repeats"]):
        b = batches[r % 2]
        t0 = time.perf_counter()
        _, g, res, fw = value_and_grad(spec, params, b, loss, reg)
        opt.update(params, g)
        times.append(time.perf_counter() - t0)
        hid.append(fw.spike_counts[0].mean())
    return {"seconds_per_batch": float(np.median(times)), "peak_mb": _rss_mb(), "base_mb": base,
            "hidden_spikes_per_neuron": float(np.mean(hid)), "input_spikes_per_sample": float(batches[0].counts().mean())}


def _worker_trainer(args) -> dict:
    """The whole trainer (``train.run``: shift augmentation, batching, forward, loss and
    regulariser, backward, Adam, then the test-set evaluation) on the paper's SHD recipe
    (configs/shd_sum_exp_recurrent.yaml: shift 40, batch 32, regulariser, sum_exp), with the
    compute-only measurement's network and input weights. Two epochs; the second is timed."""
    import tempfile

    from .config import validate
    from .engine import set_threads
    from .train import run

    set_threads(args["threads"])
    train = shd_like(args["n_train"], args["steps"], 1.0, args["spikes"], seed=1)
    test = shd_like(args["n_test"], args["steps"], 1.0, args["spikes"], seed=2)
    cfg = validate({
        "data": {"name": "shd", "trial_ms": float(args["steps"]), "n_val": 0, "augment": {"shift": 40}},
        "model": {"dt_ms": 1.0, "hidden": [args["hidden"]], "recurrent": args["recurrent"], "tau_mem": 20.0,
                  "tau_syn": 5.0, "init": {"input_mean": args["w_in"], "input_sd": 0.01, "rec_sd": 0.02, "out_sd": 0.03}},
        "loss": {"name": "sum_exp", "tau0": 1.0, "tau1": 100.0, "alpha": 5e-5},
        "reg": {"k_upper": 2e-7, "k_lower": 2e-7, "nu": 14.0},
        "train": {"epochs": 2, "batch_size": args["batch"], "lr": 1e-3, "ease_in": False, "select": "train",
                  "eval_batch_size": 256, "threads": args["threads"]},
    })
    tm: list = []
    with tempfile.TemporaryDirectory() as d:
        run(cfg, d, data={"train": train, "val": None, "test": test}, quiet=True, log=lambda *a: None, timings=tm)
    last = tm[-1]
    scale = SHD_TRAIN / args["n_train"]
    return {"seconds_per_epoch": last["total"] * scale, "seconds_per_batch": last["total"] / -(-args["n_train"] // args["batch"]),
            "eval_seconds_shd_test": last["eval"] * SHD_TEST / args["n_test"],
            "breakdown": {k: v * scale for k, v in last.items() if k not in ("total", "eval")},
            "peak_mb": _rss_mb(), "base_mb": 0.0}


def _data_config(args):
    """The run config of a ``--data`` measurement: the shipped config with the data path set."""
    from .config import resolve

    return resolve(args["config"], list(args.get("sets", [])) + [f"data.path={args['data']}",
                                                                 f"train.threads={args['threads']}"])


def _data_batches(args):
    """``--data``: the first two training batches of the config's data (the trainer's own reader,
    binning and delay line: 700 x data.delay_copies inputs), else None."""
    if not args.get("data"):
        return None
    from .events import make_batch
    from .train import load_data, n_steps_of

    cfg = _data_config(args)
    ds = load_data(cfg)["train"]
    B, N = args["batch"], n_steps_of(cfg)
    if ds.n_units != 700 or len(ds) < 2 * B:
        raise ValueError(f"--data: expected SHD-layout data (700 channels, >= {2 * B} training samples), got "
                         f"{ds.n_units} channels and {len(ds)} samples")
    return [make_batch(ds, np.arange(i * B, (i + 1) * B), float(cfg.model.dt_ms), N,
                       delay_copies=cfg.data.delay_copies, delay_ms=cfg.data.delay_ms) for i in range(2)]


def _worker_data_eventprop(args) -> dict:
    """``--data``: forward and backward of the config's network on two batches of its data
    (value_and_grad with the config's loss and regulariser, Adam), with the hidden activity and
    the cost per hidden spike."""
    from .engine import set_threads
    from .losses import SpikeCountRegulariser, value_and_grad
    from .network import InitSpec, init_params
    from .optim import Adam
    from .train import build_loss, build_spec

    set_threads(args["threads"])
    cfg = _data_config(args)
    batches = _data_batches(args)
    spec = build_spec(cfg, 700 * cfg.data.delay_copies, 20)  # SHD layout (checked by _data_batches), delay line
    params = init_params(spec, InitSpec(**cfg.model.init.model_dump()), seed=cfg.train.seed)
    loss, opt = build_loss(cfg), Adam(cfg.train.lr)
    reg = SpikeCountRegulariser(cfg.reg.k_upper, cfg.reg.k_lower, cfg.reg.nu)
    value_and_grad(spec, params, batches[0], loss, reg)  # warm-up (loads cached kernels)
    rows = []
    for r in range(args["repeats"]):
        tm: dict = {}
        t0 = time.perf_counter()
        _, g, res, fw = value_and_grad(spec, params, batches[r % 2], loss, reg, timings=tm)
        opt.update(params, g)
        rows.append((time.perf_counter() - t0, tm.get("forward", 0.0), tm.get("backward", 0.0),
                     float(fw.spike_counts[0].sum())))
    t, f, b, n_spk = (float(np.median([x[i] for x in rows])) for i in range(4))
    return {"counters": fw.counters(), "seconds_per_batch": t, "forward": f, "backward": b, "peak_mb": _rss_mb(), "base_mb": 0.0,
            "hidden_spikes_per_neuron": n_spk / (args["batch"] * spec.hidden[0].size),
            "us_per_hidden_spike": 1e6 * (f + b) / max(n_spk, 1.0),
            "input_spikes_per_sample": float(batches[0].counts().mean())}


def _worker_data_trainer(args) -> dict:
    """``--data``: the whole trainer (train.run) with the config as shipped, two epochs on the
    data's training set (the second timed), then its test-set evaluation."""
    import tempfile

    from .train import run

    cfg = _data_config(args)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"epochs": 2})})
    tm: list = []
    with tempfile.TemporaryDirectory() as d:
        run(cfg, d, quiet=True, log=lambda *a: None, timings=tm)
    last = tm[-1]
    return {"seconds_per_epoch": last["total"], "eval_seconds": last["eval"],
            "breakdown": {k: v for k, v in last.items() if k not in ("total", "eval")}, "peak_mb": _rss_mb(),
            "base_mb": 0.0}


def _dense_data(args, torch):
    """Two dense (steps, batch, inputs) input tensors of the SHD-shaped workload (700 inputs) or of
    ``--data`` (700 x the config's delay copies), with labels."""
    from .events import make_batch

    B, N = args["batch"], args["steps"]
    given = _data_batches(args)
    if given is None:
        ds = shd_like(args["batch"] * 2, args["steps"], 1.0, args["spikes"], seed=1, active_ms=args.get("active_ms"))

    n_in = 700 * args.get("delay_copies", 1)

    def dense(i):
        sb = given[i] if given is not None else make_batch(ds, np.arange(i * B, (i + 1) * B), 1.0, N)
        x = np.zeros((N, B, n_in), dtype=np.float32)
        for b in range(B):
            for n in range(N):
                x[n, b, sb.units[sb.ptr[b, n]:sb.ptr[b, n + 1]]] = 1.0
        return torch.from_numpy(x), torch.from_numpy(sb.labels)

    return [dense(0), dense(1)]


def _time_steps(forward, opt, data, repeats) -> dict:
    """Median seconds of a training step (forward, cross-entropy of the readout, backward, Adam;
    after one warm-up step), and memory."""
    import torch

    def step(x, y):
        loss = torch.nn.functional.cross_entropy(forward(x, y), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    base = _current_mb()
    step(*data[0])
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        step(*data[r % 2])
        times.append(time.perf_counter() - t0)
    return {"seconds_per_batch": float(np.median(times)), "peak_mb": _rss_mb(), "base_mb": base}


def dense_bptt(torch, B: int, N: int, H: int, recurrent: bool, w_in: float, device="cpu"):
    """The dense surrogate-gradient BPTT baseline of the workload's network on ``device``:
    (readout(x) -> (B, 20) e^{-t/T}-weighted mean output voltage, Adam optimiser); x is a dense
    (N, B, 700) spike tensor. Same decays, reset to 0, fast-sigmoid surrogate."""
    a_m, b_s = float(np.exp(-1 / 20)), float(np.exp(-1 / 5))
    c_f = 5.0 / (20 - 5) * (a_m - b_s)
    W_in = torch.nn.Parameter((torch.randn(700, H) * 0.01 + w_in).to(device))
    W_rec = torch.nn.Parameter((torch.randn(H, H) * 0.02).to(device)) if recurrent else None
    W_out = torch.nn.Parameter((torch.randn(H, 20) * 0.03).to(device))
    opt = torch.optim.Adam([p for p in (W_in, W_rec, W_out) if p is not None], lr=1e-3)
    w_t = torch.exp(-torch.arange(1, N + 1, dtype=torch.float32) / N).tolist()

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, v):
            ctx.save_for_backward(v)
            return (v >= 1.0).float()

        @staticmethod
        def backward(ctx, g):
            (v,) = ctx.saved_tensors
            return g / (10.0 * (v - 1.0).abs() + 1.0) ** 2  # fast-sigmoid surrogate

    def readout(x):
        z = lambda n: torch.zeros(B, n, device=device)  # noqa: E731
        V, I, Vo, Io, s, acc = z(H), z(H), z(20), z(20), z(H), z(20)
        inp = (x @ W_in).unbind(0)  # per-step views; unbind's backward is one stack, not N full-size adds
        for n in range(N):
            I = I + inp[n] + (s @ W_rec if W_rec is not None else 0.0)
            Io = Io + s @ W_out
            V = a_m * V + c_f * I
            I = b_s * I
            Vo = a_m * Vo + c_f * Io
            Io = b_s * Io
            s = Spike.apply(V)
            V = V * (1.0 - s)
            acc = acc + w_t[n] * Vo
        return acc / N

    return readout, opt


def _worker_torch(args) -> dict:
    import torch

    torch.set_num_threads(args["threads"])
    torch.set_flush_denormal(True)  # decaying states reach denormals, which are very slow on CPUs
    torch.manual_seed(0)
    data = _dense_data(args, torch)
    readout, opt = dense_bptt(torch, args["batch"], args["steps"], args["hidden"], args["recurrent"], args["w_in"])
    return _time_steps(lambda x, y: readout(x), opt, data, args["repeats"])


def _worker_snntorch(args) -> dict:
    """The same network and data with snnTorch, as its users build it: nn.Linear layers (their default
    initialisation), (R)Synaptic neurons with the same decays, fast-sigmoid surrogate, reset to zero,
    a non-spiking Synaptic output whose membrane is averaged with the weight e^{-t/T}, Adam."""
    import snntorch as snn
    import torch
    from snntorch import surrogate

    torch.set_num_threads(args["threads"])
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    N, H = args["steps"], args["hidden"]
    data = _dense_data(args, torch)
    dt = float(args.get("dt", 1.0))
    a_m, b_s = float(np.exp(-dt / 20)), float(np.exp(-dt / 5))
    grad = surrogate.fast_sigmoid()
    fc_in = torch.nn.Linear(int(data[0][0].shape[-1]), H, bias=False)
    if args["recurrent"]:
        hid = snn.RSynaptic(alpha=b_s, beta=a_m, linear_features=H, spike_grad=grad, reset_mechanism="zero")
    else:
        hid = snn.Synaptic(alpha=b_s, beta=a_m, spike_grad=grad, reset_mechanism="zero")
    fc_out = torch.nn.Linear(H, 20, bias=False)
    out = snn.Synaptic(alpha=b_s, beta=a_m, spike_grad=grad, reset_mechanism="none")
    mods = torch.nn.ModuleList([fc_in, hid, fc_out, out])
    opt = torch.optim.Adam(mods.parameters(), lr=1e-3)
    w_t = torch.exp(-torch.arange(1, N + 1, dtype=torch.float32) / N).tolist()

    def step(x, y):
        if args["recurrent"]:
            spk, syn, mem = hid.init_rsynaptic()
        else:
            syn, mem = hid.init_synaptic()
        syn2, mem2 = out.init_synaptic()
        acc = 0.0
        for n in range(N):
            # the input layer step by step, as snnTorch's tutorials do (one product over all steps
            # then x[n]-indexing makes autograd's backward quadratic in the number of steps:
            # 22 s instead of 0.5 s per batch here)
            cur = fc_in(x[n])
            if args["recurrent"]:
                spk, syn, mem = hid(cur, spk, syn, mem)
            else:
                spk, syn, mem = hid(cur, syn, mem)
            _, syn2, mem2 = out(fc_out(spk), syn2, mem2)
            acc = acc + w_t[n] * mem2
        return acc / N

    return _time_steps(step, opt, data, args["repeats"])


def _child(kind: str, args: dict) -> dict:
    cmd = [sys.executable, "-m", "eventprop.bench", "--worker", kind, json.dumps(args)]
    env = dict(os.environ)
    env["NUMBA_NUM_THREADS"] = str(max(args["threads"], 1))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_bench(threads: int = 2, repeats: int = 10, torch_baseline: bool = True, torch_repeats: int = 3,
              snntorch_baseline: bool = True,
              spikes: float = 11000.0, batch: int = 32, hidden: int = 256, w_in: float = 0.013,
              memory_steps=(500, 5000), trainer: bool = True, trainer_samples: int = 512, echo=print) -> dict:
    results = {"threads": threads, "batch": batch, "hidden": hidden, "spikes": spikes, "rows": []}
    echo(f"SHD-shaped workload: 700-{hidden}-20, dt 1 ms, batch {batch}, ~{spikes:.0f} input spikes/sample, "
         f"{threads} threads; epoch = {SHD_TRAIN} samples")
    echo(f"{'implementation':<28}{'s/batch':>10}{'s/epoch':>10}{'peak MB':>10}{'work MB':>10}  notes")
    for rec in (False, True):
        base = dict(threads=threads, repeats=repeats, batch=batch, steps=1400, spikes=spikes, hidden=hidden,
                    recurrent=rec, w_in=w_in)
        ep = _child("eventprop", base)
        rows = [("eventprop " + ("recurrent" if rec else "feed-forward"), ep)]
        if trainer:
            tr = _child("trainer", {**base, "n_train": trainer_samples, "n_test": 256})
            rows.append(("  whole trainer", tr))
        if torch_baseline:
            tb = _child("torch", {**base, "repeats": torch_repeats})
            rows.append(("torch BPTT " + ("recurrent" if rec else "feed-forward"), tb))
            if snntorch_baseline:
                sn = _child("snntorch", {**base, "repeats": torch_repeats})
                rows.append(("snnTorch BPTT " + ("recurrent" if rec else "feed-forward"), sn))
        for name, r in rows:
            if "error" in r:
                echo(f"{name:<28}  failed: {r['error']}")
                results["rows"].append({"name": name, **r})
                continue
            per_epoch = r.get("seconds_per_epoch", r["seconds_per_batch"] * SHD_TRAIN / batch)
            note = ""
            if "breakdown" in r:
                note = ("per epoch: " + ", ".join(f"{k} {v:.2f}" for k, v in r["breakdown"].items())
                        + f"; test-set evaluation ({SHD_TEST} samples) {r['eval_seconds_shd_test']:.2f} s")
            if "hidden_spikes_per_neuron" in r:
                note = f"{r['input_spikes_per_sample']:.0f} in-spikes, {r['hidden_spikes_per_neuron']:.1f} hidden spikes/neuron"
            work = f"{r['peak_mb'] - r['base_mb']:>10.0f}" if r["base_mb"] else f"{'':>10}"
            echo(f"{name:<28}{r['seconds_per_batch']:>10.4f}{per_epoch:>10.2f}{r['peak_mb']:>10.0f}{work}  {note}")
            results["rows"].append({"name": name, "seconds_per_epoch": per_epoch, **r})
        tag = "rec" if rec else "ffwd"
        for name, r in rows[1:]:
            if name.strip() == "whole trainer":
                continue
            if "error" not in ep and "error" not in r:
                ratio = r["seconds_per_batch"] / ep["seconds_per_batch"]
                lib = "snntorch" if name.startswith("snnTorch") else "torch"
                echo(f"{'':<28}speed-up over {name}: {ratio:.1f}x")
                results[f"ratio_{lib}_{tag}"] = ratio
    echo("memory vs trial length (same input spike count, recurrent):")
    for kind in ["eventprop"] + (["torch"] if torch_baseline else []):
        line = []
        for steps in memory_steps:
            r = _child(kind, dict(threads=threads, repeats=2, batch=batch, steps=steps, spikes=spikes,
                                  hidden=hidden, recurrent=True, w_in=w_in, active_ms=min(1100.0, 0.8 * steps)))
            line.append((steps, r))
            results["rows"].append({"name": f"{kind} memory T={steps}", **r})
        txt = ", ".join(
            f"T={s}: {r['peak_mb']:.0f} MB peak ({r['peak_mb'] - r['base_mb']:.0f} MB working)" if "error" not in r
            else f"T={s}: failed ({r['error']})" for s, r in line
        )
        if all("error" not in r for _, r in line):
            a, b = line[0][1]["peak_mb"], line[-1][1]["peak_mb"]
            txt += f"; peak ratio {b / a:.2f}"
        echo(f"  {kind:<10} {txt}")
    return results


def default_data_config() -> str:
    """The shipped recurrent paper config (configs/shd_sum_exp_recurrent.yaml of the checkout)."""
    from pathlib import Path

    return str(Path(__file__).resolve().parents[2] / "configs" / "shd_sum_exp_recurrent.yaml")


def run_data_bench(data: str, config: str | None = None, threads: int = 2, repeats: int = 5,
                   snntorch_baseline: bool = True, torch_repeats: int = 3, sets=(), echo=print) -> dict:
    """``eventprop bench --data PATH``: the shipped recurrent paper config (or ``config``) on real
    SHD-layout data, as a user runs it: the whole trainer for an epoch of the data's training set,
    forward and backward per batch with the hidden activity and the cost per hidden spike, and
    snnTorch BPTT of the same network on the same batches, all in this run. ``sets``: --set
    overrides of the config (e.g. data.limit_train=256 for a shorter run)."""
    from .train import load_data, n_steps_of
    from .config import resolve

    config = config or default_data_config()
    cfg = resolve(config, list(sets) + [f"data.path={data}"])  # one-line errors before any child starts
    n_train = len(load_data(cfg)["train"])
    B, N = cfg.train.batch_size, n_steps_of(cfg)
    rec = bool(cfg.model.recurrent_list()[0])
    base = dict(threads=threads, repeats=repeats, batch=B, steps=N, hidden=int(cfg.model.hidden[0]), recurrent=rec,
                data=str(data), config=str(config), sets=list(sets), spikes=0.0, w_in=0.0,
                delay_copies=int(cfg.data.delay_copies), dt=float(cfg.model.dt_ms))
    n_batches = -(-n_train // B)
    res = {"data": str(data), "config": str(config), "threads": threads, "batch": B, "n_train": n_train, "rows": []}
    echo(f"--data {data}: {config}, {n_train} training samples, batch {B}, {N} steps of {cfg.model.dt_ms:g} ms, "
         f"{700 * cfg.data.delay_copies} inputs, {threads} threads")
    echo(f"{'implementation':<28}{'s/batch':>10}{'s/epoch':>10}{'peak MB':>10}  notes")
    ep = _child("data_eventprop", base)
    tr = _child("data_trainer", base)
    rows = [("eventprop compute", ep), ("eventprop whole trainer", tr)]
    if snntorch_baseline:
        rows.append(("snnTorch BPTT", _child("snntorch", {**base, "repeats": torch_repeats})))
    for name, r in rows:
        if "error" in r:
            echo(f"{name:<28}  failed: {r['error']}")
            res["rows"].append({"name": name, **r})
            continue
        per_epoch = r["seconds_per_epoch"] if "seconds_per_epoch" in r else r["seconds_per_batch"] * n_batches
        per_batch = r["seconds_per_batch"] if "seconds_per_batch" in r else per_epoch / n_batches
        note = ""
        if "us_per_hidden_spike" in r:
            note = (f"forward {r['forward']:.3f} s, backward {r['backward']:.3f} s; {r['input_spikes_per_sample']:.0f} "
                    f"in-spikes, {r['hidden_spikes_per_neuron']:.1f} hidden spikes/neuron, "
                    f"{r['us_per_hidden_spike']:.2f} us per hidden spike (forward + backward)")
        if "breakdown" in r:
            note = ("per epoch: " + ", ".join(f"{k} {v:.2f}" for k, v in r["breakdown"].items())
                    + f"; test-set evaluation {r['eval_seconds']:.2f} s")
        echo(f"{name:<28}{per_batch:>10.4f}{per_epoch:>10.2f}{r['peak_mb']:>10.0f}  {note}")
        if "counters" in r:
            c = r["counters"]
            echo(f"{'':<28}forward counters (one batch): " + ", ".join(f"{k} {v}" for k, v in c.items()))
        res["rows"].append({"name": name, "seconds_per_epoch": per_epoch, "seconds_per_batch": per_batch, **r})
    if snntorch_baseline and "error" not in rows[-1][1]:
        sn_epoch = rows[-1][1]["seconds_per_batch"] * n_batches
        for name, r in rows[:2]:
            if "error" not in r:
                ratio = sn_epoch / (r["seconds_per_epoch"] if "seconds_per_epoch" in r
                                    else r["seconds_per_batch"] * n_batches)
                echo(f"{'':<28}snnTorch BPTT / {name}: {ratio:.1f}x")
                res["ratio_snntorch_" + ("trainer" if "trainer" in name else "compute")] = ratio
    return res


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--worker":
        kind, args = sys.argv[2], json.loads(sys.argv[3])
        workers = {"eventprop": _worker_eventprop, "trainer": _worker_trainer, "torch": _worker_torch,
                   "snntorch": _worker_snntorch, "data_eventprop": _worker_data_eventprop,
                   "data_trainer": _worker_data_trainer}
        out = workers[kind](args)
        print(json.dumps(out))
    else:
        run_bench()
