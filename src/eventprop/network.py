"""Network description and parameters.

A network reads like its diagram: ``n_in`` spike sources -> one or more hidden layers of LIF
neurons (each optionally recurrent) -> an output layer of leaky integrators (``kind="li"``) or
spiking LIF neurons (``kind="lif"``). Connections are dense between consecutive layers.

Parameters are plain arrays in a plain dict:

* ``"ff0"``: (n_in, H0) input -> hidden 0;  ``"ff{i}"``: (H_{i-1}, H_i) hidden i-1 -> hidden i;
* ``"rec{i}"``: (H_i, H_i) recurrent weights of hidden layer i (row = presynaptic neuron,
  self-connections allowed);
* ``"ff{L}"``: (H_{L-1}, n_out) last hidden -> output, with L = number of hidden layers.

Rows are presynaptic neurons, so a spike of neuron ``i`` adds row ``i`` to its targets' currents.
Time constants may be scalars (per layer) or arrays (per neuron); tau_syn belongs to the
postsynaptic neuron.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .errors import ConfigError
from .neurons import MODELS


#: the hidden neuron models (docs/method.md, "Neuron models"); the output is LIF or a leaky integrator
NEURON_MODELS = tuple(MODELS)


@dataclass
class LayerSpec:
    size: int
    tau_mem: float | np.ndarray = 20.0
    tau_syn: float | np.ndarray = 5.0
    threshold: float = 1.0
    recurrent: bool = False
    neuron: str = "lif"  # "lif" or "alif" (adaptive threshold theta + A: A jumps by adapt at a spike, decays with tau_adapt)
    tau_adapt: float = 100.0  # ms (alif)
    adapt: float = 0.1  # threshold increment per spike (alif)


@dataclass
class OutputSpec:
    size: int
    kind: str = "li"  # "li" (non-spiking leaky integrator) or "lif" (spiking)
    tau_mem: float | np.ndarray = 20.0
    tau_syn: float | np.ndarray = 5.0
    threshold: float = 1.0


BACKENDS = ("auto", "cpu", "cuda")  # what may simulate a network (eventprop.engine.registry loads them)


@dataclass
class NetworkSpec:
    n_in: int
    hidden: list[LayerSpec]
    output: OutputSpec
    dt: float = 1.0
    grazing_eps: float = 1e-2
    backend: str = "cpu"  # what simulates it: cpu, cuda or auto (eventprop.engine.registry)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"model.backend: expected one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.n_in < 1:
            raise ConfigError(f"model: n_in must be >= 1, got {self.n_in}")
        if len(self.hidden) < 1:
            raise ConfigError("model.hidden: at least one hidden layer is required")
        for i, h in enumerate(self.hidden):
            if int(h.size) < 1:
                raise ConfigError(f"model.hidden[{i}]: size must be >= 1, got {h.size}")
            if not h.threshold > 0:
                raise ConfigError(f"model.hidden[{i}]: threshold must be > 0, got {h.threshold}")
            if h.neuron not in NEURON_MODELS:
                raise ConfigError(f"model.hidden[{i}]: neuron must be one of {', '.join(NEURON_MODELS)}, got {h.neuron!r}")
            if h.neuron == "alif" and not (float(h.tau_adapt) > 0 and float(h.adapt) >= 0):
                raise ConfigError(f"model.hidden[{i}]: alif needs tau_adapt > 0 ms and adapt >= 0, got "
                                  f"{h.tau_adapt} and {h.adapt}")
        if self.output.kind not in ("li", "lif"):
            raise ConfigError(f"model.output: kind must be 'li' or 'lif', got {self.output.kind!r}")
        if not self.dt > 0:
            raise ConfigError(f"model.dt_ms must be > 0, got {self.dt}")
        for name, layer in self.layers():
            for attr in ("tau_mem", "tau_syn"):
                v = np.asarray(getattr(layer, attr), dtype=np.float64)
                if v.ndim not in (0, 1) or (v.ndim == 1 and v.shape[0] != layer.size):
                    raise ConfigError(f"{name}.{attr}: expected a scalar or an array of {layer.size} values")
                if not np.all(v > 0):
                    raise ConfigError(f"{name}.{attr}: time constants must be > 0 ms")

    def layers(self):
        """(name, spec) of every neuron layer in order: hidden layers, then the output."""
        return [(f"hidden{i}", h) for i, h in enumerate(self.hidden)] + [("output", self.output)]

    @property
    def sizes(self) -> list[int]:
        return [h.size for h in self.hidden] + [self.output.size]

    def param_shapes(self) -> dict[str, tuple[int, int]]:
        shapes: dict[str, tuple[int, int]] = {}
        pre = self.n_in
        for i, h in enumerate(self.hidden):
            shapes[f"ff{i}"] = (pre, h.size)
            if h.recurrent:
                shapes[f"rec{i}"] = (h.size, h.size)
            pre = h.size
        shapes[f"ff{len(self.hidden)}"] = (pre, self.output.size)
        return shapes


@dataclass
class InitSpec:
    """Normal(mean, sd) initialisation per connection kind, as the paper (Table 2)."""

    input_mean: float = 0.03
    input_sd: float = 0.01
    hidden_mean: float = 0.02  # hidden -> hidden feed-forward (deeper networks)
    hidden_sd: float = 0.01
    rec_mean: float = 0.0
    rec_sd: float = 0.02
    out_mean: float = 0.0
    out_sd: float = 0.03
    extra: dict = field(default_factory=dict)


def init_params(spec: NetworkSpec, init: InitSpec | None = None, seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
    """Draw all weights from Normal(mean, sd) per connection, from one seeded generator.

    The draw order is fixed (ff0, rec0, ff1, rec1, ..., output), so the same seed always gives
    the same network.
    """
    init = init or InitSpec()
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    L = len(spec.hidden)
    for name, shape in spec.param_shapes().items():
        if name.startswith("rec"):
            mean, sd = init.rec_mean, init.rec_sd
        elif name == "ff0":
            mean, sd = init.input_mean, init.input_sd
        elif name == f"ff{L}":
            mean, sd = init.out_mean, init.out_sd
        else:
            mean, sd = init.hidden_mean, init.hidden_sd
        params[name] = rng.normal(mean, sd, size=shape).astype(dtype)
    return params


def tau_shapes(spec: NetworkSpec) -> dict[str, tuple[int]]:
    """The optional learned time constants: ``tau_mem<l>``, ``tau_syn<l>`` (ms, one per neuron)
    of hidden layer l, and of the output layer as l = number of hidden layers (like ``ff<l>``).
    When present in a parameter dict they replace the spec's time constants."""
    out: dict[str, tuple[int]] = {}
    for i, h in enumerate(spec.hidden):
        out[f"tau_mem{i}"] = (h.size,)
        out[f"tau_syn{i}"] = (h.size,)
    L = len(spec.hidden)
    out[f"tau_mem{L}"] = (spec.output.size,)
    out[f"tau_syn{L}"] = (spec.output.size,)
    return out


def with_param_taus(spec: NetworkSpec, params: dict[str, np.ndarray]) -> NetworkSpec:
    """``spec`` with the time constants of ``params`` (tau_mem<l>, tau_syn<l>) where it has them."""
    if not any(k.startswith("tau_") for k in params):
        return spec
    hidden = []
    for i, h in enumerate(spec.hidden):
        tm = params.get(f"tau_mem{i}")
        ts = params.get(f"tau_syn{i}")
        hidden.append(dataclasses.replace(h, tau_mem=h.tau_mem if tm is None else np.asarray(tm, np.float64).copy(),
                                          tau_syn=h.tau_syn if ts is None else np.asarray(ts, np.float64).copy()))
    o = spec.output
    L = len(spec.hidden)
    tm, ts = params.get(f"tau_mem{L}"), params.get(f"tau_syn{L}")
    if tm is not None or ts is not None:
        o = OutputSpec(o.size, o.kind, o.tau_mem if tm is None else np.asarray(tm, np.float64).copy(),
                       o.tau_syn if ts is None else np.asarray(ts, np.float64).copy(), o.threshold)
    return NetworkSpec(spec.n_in, hidden, o, spec.dt, spec.grazing_eps, spec.backend)


def check_params(spec: NetworkSpec, params: dict[str, np.ndarray]) -> None:
    """Raise ConfigError unless ``params`` has exactly the weight arrays ``spec`` needs (plus, if
    any, learned time constants of hidden layers), finite."""
    shapes = spec.param_shapes()
    taus = tau_shapes(spec)
    missing = set(shapes) - set(params)
    dly = {f"delay{l}": (h.size,) for l, h in enumerate(spec.hidden)}
    extra = set(params) - set(shapes) - set(taus) - set(dly) - {"delay_in"}
    for k in set(params) & set(dly):
        d = np.asarray(params[k])
        if d.shape != dly[k] or not np.all(np.isfinite(d)) or np.any(d < 0):
            raise ConfigError(f"parameters[{k!r}]: expected {dly[k][0]} finite delays >= 0 ms (one per neuron), "
                              f"got shape {d.shape}")
    if "delay_in" in params:
        d = np.asarray(params["delay_in"])
        if d.shape != (spec.n_in,) or not np.all(np.isfinite(d)) or np.any(d < 0):
            raise ConfigError(f"parameters['delay_in']: expected {spec.n_in} finite input delays >= 0 ms, "
                              f"got shape {d.shape}")
    if missing or extra:
        raise ConfigError(f"parameters: expected arrays {sorted(shapes)}, got {sorted(params)}")
    for k in set(params) & set(taus):
        a = np.asarray(params[k])
        if tuple(a.shape) != taus[k]:
            raise ConfigError(f"parameters[{k!r}]: shape {tuple(a.shape)}, expected {taus[k]}")
        if not np.all(np.isfinite(a)) or not np.all(a > 0):
            raise ConfigError(f"parameters[{k!r}]: time constants must be finite and > 0 ms")
    for k, shp in shapes.items():
        a = params[k]
        if tuple(a.shape) != shp:
            raise ConfigError(f"parameters[{k!r}]: shape {tuple(a.shape)}, expected {shp}")
        if not np.all(np.isfinite(a)):
            raise ConfigError(f"parameters[{k!r}]: contains NaN or infinite values")
