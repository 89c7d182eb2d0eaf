"""Export to and import from NIR, the Neuromorphic Intermediate Representation (``pip install 'eventprop[nir]'``).

The mapping (docs/interop.md has the table). eventprop's neuron, times in ms::

    tau_s dI/dt = -I,  I += w at each presynaptic spike,  tau_m dV/dt = -V + I,  spike at V = theta, V <- 0

NIR's CubaLIF / CubaLI, times in seconds, input S = W s(t) with s(t) a sum of Dirac deltas::

    tau_syn dI/dt = -I + w_in S,   tau_mem dv/dt = (v_leak - v) + r I,   spike at v = v_threshold, v <- v_reset

A unit Dirac delta through weight W makes NIR's I jump by w_in W / tau_syn, and v sees r times that.
eventprop's V sees a jump of w. So, per postsynaptic neuron, with spike area ``a`` (1 for NIR's unit
Dirac deltas)::

    W (Linear.weight) = w^T  (our arrays are (pre, post); NIR's are (post, pre)),
    w_in = tau_syn / (a r),  r = 1 (default) or tau_mem / 1e-4 s (``convention="snntorch"``),
    v_leak = 0, v_reset = 0, v_threshold = theta, tau_syn, tau_mem in seconds (per neuron),

and v is our V exactly. ``convention="snntorch"`` writes the same network in the convention of
snnTorch's NIR import (which reads a spike as a unit-height pulse over its fixed 0.1 ms step, so
a = 1e-4 s, and requires r = tau_mem / 1e-4 s); both conventions are the same model up to that
reading of a spike. On import every weight into a neuron is multiplied by a w_in r / tau_syn of that
neuron (skipped when that factor is 1 to within 1e-12, so export -> import is bit-identical).

Delay-line inputs (``data.delay_copies`` copies of the n_units channels, copy c delayed by
c * delay_ms rounded to whole grid steps, as ``events.make_batch``): ``delay_line="nodes"``
(default) writes Input(n_units) -> Delay(c * delay, seconds) -> Linear (rows c*n_units.. of ff0)
-> the first CubaLIF, one Delay + Linear per copy c >= 1, exact and self-contained;
``delay_line="expanded"`` writes Input(n_units * delay_copies) -> Linear(ff0) and records the delay
line in the graph's metadata only (for consumers without Delay nodes: feed them the copies).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import __version__
from .errors import UserError
from .network import LayerSpec, NetworkSpec, OutputSpec, check_params

SNNTORCH_DT_S = 1e-4  # the fixed step of snnTorch's NIR import
CONVENTIONS = ("nir", "snntorch")
SUPPORTED = "Input, Linear, Affine (zero bias), Delay, CubaLIF, CubaLI, Output"


def _nir():
    try:
        import nir
    except ImportError:
        raise UserError("NIR export and import need nir: pip install 'eventprop[nir]'") from None
    return nir


def _spike_area(convention: str) -> float:
    if convention not in CONVENTIONS:
        raise UserError(f"NIR convention {convention!r}: expected one of {', '.join(CONVENTIONS)}")
    return 1.0 if convention == "nir" else SNNTORCH_DT_S


def _per_neuron_s(x, n) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    return (np.full(n, float(a)) if a.ndim == 0 else a.astype(np.float64)) / 1000.0


def _neuron_node(nir, layer, spiking: bool, convention: str):
    n = int(layer.size)
    ts = _per_neuron_s(layer.tau_syn, n)
    tm = _per_neuron_s(layer.tau_mem, n)
    a = _spike_area(convention)
    r = np.ones(n) if convention == "nir" else tm / SNNTORCH_DT_S
    w_in = ts / (a * r)
    # the ms values, so that import gives back exactly these (seconds -> ms is not always unique)
    meta = {"eventprop_tau_syn_ms": np.broadcast_to(np.asarray(layer.tau_syn, dtype=np.float64), (n,)).copy(),
            "eventprop_tau_mem_ms": np.broadcast_to(np.asarray(layer.tau_mem, dtype=np.float64), (n,)).copy()}
    if spiking:
        return nir.CubaLIF(tau_syn=ts, tau_mem=tm, r=r, v_leak=np.zeros(n), v_threshold=np.full(n, float(layer.threshold)),
                           v_reset=np.zeros(n), w_in=w_in, metadata=meta)
    return nir.CubaLI(tau_syn=ts, tau_mem=tm, r=r, v_leak=np.zeros(n), w_in=w_in, metadata=meta)


def export_nir(spec: NetworkSpec, params: dict, delay_copies: int = 1, delay_ms: float = 0.0, delay_line: str = "nodes",
               convention: str = "nir", metadata: dict | None = None):
    """The network as a ``nir.NIRGraph`` (see the module docstring for the mapping).

    ``spec.n_in`` must be ``n_units * delay_copies``; ``delay_ms`` is rounded to whole steps of
    ``spec.dt`` as the training input was. Node names: ``input``, ``delay{c}``, ``ff0`` (or
    ``ff0_copy{c}`` per delay copy), ``lif{i}``, ``rec{i}``, ``ff{i}``, ``out``, ``output``.
    """
    nir = _nir()
    check_params(spec, params)
    if "delay_in" in params:
        raise UserError("NIR export of learned input delays is not supported yet (the network has 'delay_in')")
    if any(k.startswith("delay") and k != "delay_in" for k in params):
        raise UserError("NIR export of hidden-neuron delays is not supported yet (the network has 'delay<l>')")
    if any(h.neuron != "lif" for h in spec.hidden):
        raise UserError("NIR export of adaptive (alif) neurons is not supported: NIR has no adaptive-threshold node")
    from .network import with_param_taus

    spec = with_param_taus(spec, params)  # learned time constants go out per neuron
    params = {k: v for k, v in params.items() if not k.startswith("tau_")}
    if delay_line not in ("nodes", "expanded"):
        raise UserError(f"delay_line {delay_line!r}: expected 'nodes' or 'expanded'")
    C = int(delay_copies)
    if C < 1 or spec.n_in % C:
        raise UserError(f"delay_copies = {delay_copies}: the network's {spec.n_in} inputs are not a whole number of copies")
    n_units = spec.n_in // C
    step_delay_ms = round(delay_ms / spec.dt) * spec.dt if C > 1 else 0.0
    nodes, edges = {}, []
    L = len(spec.hidden)
    if C > 1 and delay_line == "nodes":
        nodes["input"] = nir.Input(input_type={"input": np.array([n_units])})
        w0 = params["ff0"]
        for c in range(C):
            name = "ff0" if c == 0 else f"ff0_copy{c}"
            nodes[name] = nir.Linear(weight=np.ascontiguousarray(w0[c * n_units:(c + 1) * n_units].T))
            if c == 0:
                edges.append(("input", name))
            else:
                nodes[f"delay{c}"] = nir.Delay(delay=np.full(n_units, c * step_delay_ms / 1000.0))
                edges += [("input", f"delay{c}"), (f"delay{c}", name)]
            edges.append((name, "lif0"))
    else:
        nodes["input"] = nir.Input(input_type={"input": np.array([spec.n_in])})
        nodes["ff0"] = nir.Linear(weight=np.ascontiguousarray(params["ff0"].T))
        edges += [("input", "ff0"), ("ff0", "lif0")]
    for i, h in enumerate(spec.hidden):
        nodes[f"lif{i}"] = _neuron_node(nir, h, True, convention)
        if h.recurrent:
            nodes[f"rec{i}"] = nir.Linear(weight=np.ascontiguousarray(params[f"rec{i}"].T))
            edges += [(f"lif{i}", f"rec{i}"), (f"rec{i}", f"lif{i}")]
        nxt = f"lif{i + 1}" if i + 1 < L else "out"
        nodes[f"ff{i + 1}"] = nir.Linear(weight=np.ascontiguousarray(params[f"ff{i + 1}"].T))
        edges += [(f"lif{i}", f"ff{i + 1}"), (f"ff{i + 1}", nxt)]
    nodes["out"] = _neuron_node(nir, spec.output, spec.output.kind == "lif", convention)
    nodes["output"] = nir.Output(output_type={"output": np.array([spec.output.size])})
    edges.append(("out", "output"))
    meta = {"generator": f"eventprop {__version__}", "eventprop_convention": convention,
            "eventprop_spike_area_s": _spike_area(convention), "eventprop_dt_ms": float(spec.dt),
            "eventprop_grazing_eps": float(spec.grazing_eps), "eventprop_delay_copies": C,
            "eventprop_delay_ms": float(step_delay_ms), "eventprop_delay_line": delay_line if C > 1 else "none",
            "eventprop_output_kind": spec.output.kind}
    meta.update(metadata or {})
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)


def to_nir_file(path, spec: NetworkSpec, params: dict, **kw) -> Path:
    """Write :func:`export_nir`'s graph to ``path`` (HDF5, NIR's own format)."""
    nir = _nir()
    g = export_nir(spec, params, **kw)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nir.write(str(path), g)
    return path


# ---------------------------------------------------------------------------------------------- import


def _meta(graph) -> dict:
    out = {}
    for k, v in (getattr(graph, "metadata", None) or {}).items():
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, np.ndarray) and v.ndim == 0:
            v = v.item()
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


def _flatten(nir, graph) -> tuple[dict, list]:
    """Nodes and edges with nested graphs (e.g. snnTorch's recurrent subgraphs) inlined."""
    nodes, edges = dict(graph.nodes), [tuple(e) for e in graph.edges]
    for name, sub in list(nodes.items()):
        if not isinstance(sub, nir.NIRGraph):
            continue
        inner, inner_edges = _flatten(nir, sub)
        ins = [k for k, n in inner.items() if isinstance(n, nir.Input)]
        outs = [k for k, n in inner.items() if isinstance(n, nir.Output)]
        if len(ins) != 1 or len(outs) != 1:
            raise UserError(f"NIR node {name!r} (a nested NIRGraph): needs exactly one Input and one Output inside")
        del nodes[name]
        pre = [a for a, b in edges if b == name]
        post = [b for a, b in edges if a == name]
        edges = [e for e in edges if name not in e]
        rn = {k: f"{name}.{k}" for k in inner}
        for k, n in inner.items():
            if k not in ins and k not in outs:
                nodes[rn[k]] = n
        for a, b in inner_edges:
            srcs = pre if a == ins[0] else [rn[a]]
            dsts = post if b == outs[0] else [rn[b]]
            edges += [(s, d) for s in srcs for d in dsts]
    return nodes, edges


def _uniform(name, what, a, n):
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    if a.size == 1:
        a = np.full(n, a[0])
    if a.size != n:
        raise UserError(f"NIR node {name!r}: {what} has {a.size} values for {n} neurons")
    return a


def _ms_one(x: float) -> float:
    """The ms value m with m / 1000 == x (what export wrote), preferring a short decimal."""
    short = float(f"{x * 1000.0:.12g}")
    if short / 1000.0 == x:
        return short
    m = x * 1000.0
    up = down = m
    for _ in range(8):  # m is within a few ulps of the original
        for c in (up, down):
            if c / 1000.0 == x:
                return float(c)
        up, down = float(np.nextafter(up, np.inf)), float(np.nextafter(down, -np.inf))
    return m


def _ms(a_s: np.ndarray, recorded=None):
    """Seconds -> ms, undoing export's / 1000; a scalar if all neurons share the value. ``recorded``:
    the ms values export kept in the node's metadata, used when they still give these seconds."""
    rec = None if recorded is None else np.asarray(recorded, dtype=np.float64).reshape(-1)
    if rec is not None and rec.shape == a_s.shape and np.array_equal(rec / 1000.0, a_s):
        ms = rec
    else:
        ms = np.array([_ms_one(float(x)) for x in a_s])
    return float(ms[0]) if np.all(ms == ms[0]) else ms


def import_nir(graph_or_path, convention: str | None = None, dt_ms: float | None = None):
    """A NIR graph (or .nir file) of eventprop's shape -> ``(spec, params, extra)``.

    Shape: Input -> [Delay ->] Linear -> CubaLIF (optionally with a Linear from itself to itself)
    -> Linear -> ... -> CubaLI (leaky-integrator outputs) or CubaLIF (spiking outputs) -> Output.
    ``extra`` holds ``delay_copies``, ``delay_ms``, ``n_units`` and the graph's metadata.
    ``convention`` (default: the graph's ``eventprop_convention`` metadata, else ``"nir"``) says
    how a spike is read (module docstring). Anything else is a one-line :class:`UserError` naming
    the node. Time constants are returned per layer when all neurons share them, else per neuron.
    """
    nir = _nir()
    if isinstance(graph_or_path, (str, Path)):
        p = Path(graph_or_path)
        if not p.is_file():
            raise UserError(f"NIR file {str(p)!r} not found")
        try:
            graph = nir.read(str(p))
        except Exception as e:  # h5py / nir errors on a malformed file
            raise UserError(f"{str(p)!r} is not a readable NIR file ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    else:
        graph = graph_or_path
    meta = _meta(graph)
    convention = convention or meta.get("eventprop_convention", "nir")
    area = _spike_area(convention)
    nodes, edges = _flatten(nir, graph)
    kinds = (nir.Input, nir.Output, nir.Linear, nir.Affine, nir.Delay, nir.CubaLIF, nir.CubaLI)
    for name, n in nodes.items():
        if not isinstance(n, kinds):
            raise UserError(f"NIR node {name!r} of type {type(n).__name__} is not supported (eventprop reads {SUPPORTED})")
        if isinstance(n, nir.Affine) and n.bias is not None and np.any(np.asarray(n.bias) != 0):
            raise UserError(f"NIR node {name!r} (Affine): a nonzero bias is not supported (eventprop neurons have no bias current)")
    succ = {k: [b for a, b in edges if a == k] for k in nodes}
    pred = {k: [a for a, b in edges if b == k] for k in nodes}
    inputs = [k for k, n in nodes.items() if isinstance(n, nir.Input)]
    outputs = [k for k, n in nodes.items() if isinstance(n, nir.Output)]
    if len(inputs) != 1 or len(outputs) != 1:
        raise UserError(f"NIR graph: expected one Input and one Output node, got {len(inputs)} and {len(outputs)}")
    inp, outp = inputs[0], outputs[0]
    n_units = int(np.prod(np.asarray(nodes[inp].input_type["input"]).reshape(-1)))
    is_neuron = lambda k: isinstance(nodes[k], (nir.CubaLIF, nir.CubaLI))  # noqa: E731
    is_lin = lambda k: isinstance(nodes[k], (nir.Linear, nir.Affine))  # noqa: E731

    def weight(k, n_out, n_in):
        w = np.asarray(nodes[k].weight)
        if w.shape != (n_out, n_in):
            raise UserError(f"NIR node {k!r} ({type(nodes[k]).__name__}): weight shape {tuple(w.shape)}, expected {(n_out, n_in)}")
        return w

    def one(k, lst, what):
        if len(lst) != 1:
            raise UserError(f"NIR node {k!r} ({type(nodes[k]).__name__}): expected one {what}, got {len(lst)} ({', '.join(lst) or 'none'})")
        return lst[0]

    # the first neuron layer: every path from the Input is [Delay ->] Linear -> neuron
    first_lins = []
    for k in succ[inp]:
        if isinstance(nodes[k], nir.Delay):
            lin = one(k, succ[k], "successor")
            d = np.asarray(nodes[k].delay, dtype=np.float64).reshape(-1)
            if d.size not in (1, n_units) or not np.all(d == d[0]):
                raise UserError(f"NIR node {k!r} (Delay): eventprop needs one delay for all channels of a copy")
            if one(k, pred[k], "predecessor") != inp:
                raise UserError(f"NIR node {k!r} (Delay): must be fed by the Input")
            first_lins.append((float(d[0]), lin))
        elif is_lin(k):
            first_lins.append((0.0, k))
        else:
            raise UserError(f"NIR node {k!r} ({type(nodes[k]).__name__}): the Input must feed Linear or Delay nodes")
    if not first_lins:
        raise UserError("NIR graph: the Input feeds nothing")
    layers = []  # (neuron name, ff linear(s), rec linear or None)
    targets = set()
    for _, lin in first_lins:
        if not is_lin(lin):
            raise UserError(f"NIR node {lin!r} ({type(nodes[lin]).__name__}): a Delay must feed a Linear")
        targets.add(one(lin, succ[lin], "successor"))
    if len(targets) != 1 or not is_neuron(next(iter(targets))):
        raise UserError(f"NIR graph: the input's Linear nodes must all feed one CubaLIF node, they feed {sorted(targets)}")
    cur = next(iter(targets))
    first_lins.sort()
    delays = [d for d, _ in first_lins]
    C = len(first_lins)
    delay_s = delays[1] - delays[0] if C > 1 else 0.0
    if delays[0] != 0.0 or (C > 1 and not np.allclose(delays, np.arange(C) * delay_s, rtol=1e-9, atol=1e-15)):
        raise UserError(f"NIR graph: input delays {delays} s are not a delay line 0, d, 2d, ... (one copy per delay)")
    prev_lins = [lin for _, lin in first_lins]
    prev_size = n_units
    seen = {inp, outp} | {lin for lin in prev_lins} | {k for k in succ[inp]}
    while True:
        node = nodes[cur]
        size = int(np.asarray(node.tau_mem).reshape(-1).size)
        rec, nxt = None, []
        for k in succ[cur]:
            if k == outp:
                nxt.append(k)
            elif is_lin(k) and one(k, succ[k], "successor") == cur:
                if rec is not None:
                    raise UserError(f"NIR node {cur!r}: more than one recurrent Linear ({rec}, {k})")
                rec = k
            elif is_lin(k):
                nxt.append(k)
            else:
                raise UserError(f"NIR node {k!r} ({type(nodes[k]).__name__}) after {cur!r}: expected a Linear or the Output")
        for k in pred[cur]:
            if k not in prev_lins and k != rec:
                raise UserError(f"NIR node {cur!r}: unexpected input from {k!r} ({type(nodes[k]).__name__})")
        layers.append((cur, prev_lins, rec, prev_size))
        seen |= {cur} | ({rec} if rec else set())
        nx = one(cur, nxt, "successor besides its recurrent Linear")
        if nx == outp:
            break
        if isinstance(node, nir.CubaLI):
            raise UserError(f"NIR node {cur!r} (CubaLI): leaky integrators are only supported as the output layer")
        tgt = one(nx, succ[nx], "successor")
        if not is_neuron(tgt):
            raise UserError(f"NIR node {tgt!r} of type {type(nodes[tgt]).__name__} is not supported after {nx!r} (expected CubaLIF or CubaLI)")
        if tgt in seen:
            raise UserError(f"NIR graph: node {tgt!r} is reached twice (eventprop reads a chain of layers)")
        seen.add(nx)
        prev_lins, prev_size, cur = [nx], size, tgt
    left = set(nodes) - seen
    if left:
        k = sorted(left)[0]
        raise UserError(f"NIR node {k!r} of type {type(nodes[k]).__name__} is not connected as eventprop's layers are")
    if len(layers) < 2:
        raise UserError(f"NIR graph: needs at least one hidden CubaLIF layer before the output, got {len(layers) - 1}")

    hidden, params = [], {}
    out_spec = None
    for li, (name, lins, rec, pre_size) in enumerate(layers):
        node = nodes[name]
        nm = getattr(node, "metadata", None) or {}
        n = int(np.asarray(node.tau_mem).reshape(-1).size)
        ts = _uniform(name, "tau_syn", node.tau_syn, n)
        tm = _uniform(name, "tau_mem", node.tau_mem, n)
        r = _uniform(name, "r", node.r, n)
        w_in = _uniform(name, "w_in", node.w_in, n)
        if np.any(_uniform(name, "v_leak", node.v_leak, n) != 0):
            raise UserError(f"NIR node {name!r}: v_leak must be 0 (eventprop's neurons leak to 0)")
        if not (np.all(ts > 0) and np.all(tm > 0)):
            raise UserError(f"NIR node {name!r}: time constants must be > 0")
        spiking = isinstance(node, nir.CubaLIF)
        theta = 1.0
        if spiking:
            if np.any(_uniform(name, "v_reset", node.v_reset, n) != 0):
                raise UserError(f"NIR node {name!r}: v_reset must be 0 (eventprop resets to 0)")
            th = _uniform(name, "v_threshold", node.v_threshold, n)
            if not np.all(th == th[0]) or not th[0] > 0:
                raise UserError(f"NIR node {name!r}: needs one positive v_threshold for the whole layer, got {np.unique(th)[:4]}")
            theta = float(th[0])
        f = area * w_in * r / ts  # V's jump per unit Linear weight, per postsynaptic neuron
        if not np.all(np.isfinite(f)) or np.any(f == 0):
            raise UserError(f"NIR node {name!r}: w_in * r must be finite and nonzero")
        scale = None if np.all(np.abs(f - 1.0) <= 1e-12) else f

        def ours(k, n_pre):
            w = weight(k, n, n_pre).T
            w = np.array(w, dtype=w.dtype if w.dtype in (np.float32, np.float64) else np.float64)
            return w if scale is None else (w * scale[None, :]).astype(w.dtype)

        if li == 0:
            ff = np.concatenate([ours(k, pre_size) for k in lins], axis=0)
        else:
            ff = ours(lins[0], pre_size)
        params[f"ff{li}"] = ff
        if rec is not None:
            params[f"rec{li}"] = ours(rec, n)
        if li < len(layers) - 1:
            hidden.append(LayerSpec(n, _ms(tm, nm.get("eventprop_tau_mem_ms")), _ms(ts, nm.get("eventprop_tau_syn_ms")),
                                    theta, rec is not None))
        else:
            if rec is not None:
                raise UserError(f"NIR node {rec!r}: recurrent weights on the output layer are not supported")
            out_spec = OutputSpec(n, "lif" if spiking else "li", _ms(tm, nm.get("eventprop_tau_mem_ms")),
                                  _ms(ts, nm.get("eventprop_tau_syn_ms")), theta)
    dt = dt_ms if dt_ms is not None else float(meta.get("eventprop_dt_ms", 1.0))
    spec = NetworkSpec(n_in=n_units * C, hidden=hidden, output=out_spec, dt=dt,
                       grazing_eps=float(meta.get("eventprop_grazing_eps", 1e-2)))
    delay_copies, delay_ms = C, float(f"{delay_s * 1000.0:.12g}")
    if C == 1 and int(meta.get("eventprop_delay_copies", 1)) > 1:  # an 'expanded' delay line
        delay_copies = int(meta["eventprop_delay_copies"])
        delay_ms = float(meta.get("eventprop_delay_ms", 0.0))
        if n_units % delay_copies:
            raise UserError(f"NIR graph: metadata says {delay_copies} delay copies, the input has {n_units} channels")
        n_units //= delay_copies
    dtypes = {a.dtype for a in params.values()}
    if len(dtypes) > 1:
        params = {k: v.astype(np.float64) for k, v in params.items()}
    check_params(spec, params)
    return spec, params, {"delay_copies": delay_copies, "delay_ms": delay_ms, "n_units": n_units, "metadata": meta,
                          "convention": convention}


# ---------------------------------------------------------------------------------------------- run folders


def _run_of(source) -> tuple:
    """(config, checkpoint path) of a results folder or of a checkpoint .npz with config.yaml beside it."""
    from .config import load_file, validate

    src = Path(source)
    if src.is_dir():
        ck = src / "best.npz" if (src / "best.npz").is_file() else src / "checkpoint.npz"
        cfg_path = src / "config.yaml"
    else:
        ck, cfg_path = src, src.parent / "config.yaml"
    if not ck.is_file():
        raise UserError(f"{str(source)!r}: no checkpoint (a results folder with best.npz or checkpoint.npz, or a .npz file)")
    if not cfg_path.is_file():
        raise UserError(f"no config.yaml beside {str(ck)!r}")
    return validate(load_file(cfg_path)), ck


def export_run(source, nir_path, delay_line: str = "nodes", convention: str = "nir") -> tuple:
    """``eventprop export``: a results folder or checkpoint -> a .nir file. Returns (spec, path)."""
    _nir()
    from .config import to_yaml
    from .train import build_spec, load_checkpoint

    cfg, ck = _run_of(source)
    params = load_checkpoint(ck)
    L = len(cfg.model.hidden)
    if "ff0" not in params or f"ff{L}" not in params:
        raise UserError(f"checkpoint {str(ck)!r} does not hold this config's weights ff0..ff{L}")
    spec = build_spec(cfg, params["ff0"].shape[0], params[f"ff{L}"].shape[1])
    check_params(spec, params)
    path = to_nir_file(nir_path, spec, params, delay_copies=cfg.data.delay_copies, delay_ms=cfg.data.delay_ms,
                       delay_line=delay_line, convention=convention, metadata={"eventprop_config": to_yaml(cfg)})
    return spec, path


_DEFAULT_LOSS = {"li": "sum_exp", "lif": "first_spike_inv"}


def import_to_run(nir_file, out, config=None, sets=(), convention: str | None = None) -> tuple:
    """``eventprop import``: a .nir file -> a results-folder-like ``out`` (config.yaml, best.npz,
    nir_import.json) that ``eventprop eval`` reads and ``train.init_from`` starts from.

    The config is ``config`` (a file), else the one an eventprop export stored in the graph, else
    the embedded default; the network part (sizes, recurrence, time constants, threshold, dt,
    delay line) comes from the graph; ``sets`` (KEY=VALUE) are applied last. Returns (config, spec).
    """
    import yaml

    from . import io as fio
    from .config import DEFAULT, apply_overrides, load_file, to_yaml, validate
    from .losses import get_loss
    from .train import build_spec

    out = Path(out)
    if (out / "config.yaml").exists() or (out / "best.npz").exists() or (out / "checkpoint.npz").exists():
        raise UserError(f"output folder {str(out)!r} already holds a run; choose another --out")
    spec, params, extra = import_nir(nir_file, convention=convention)
    meta = extra["metadata"]
    if config is not None:
        base = load_file(config)
    elif isinstance(meta.get("eventprop_config"), str):
        base = yaml.safe_load(meta["eventprop_config"]) or {}
    else:
        base = dict(DEFAULT)
    for name, layer in spec.layers():
        for attr in ("tau_mem", "tau_syn"):
            if np.ndim(getattr(layer, attr)) != 0:
                raise UserError(f"NIR graph: {name} has per-neuron {attr} values; heterogeneous time constants are not "
                                "supported by the run config yet (eventprop.nir_io.import_nir returns them)")
    h = spec.hidden
    for attr in ("tau_mem", "tau_syn", "threshold"):
        vals = {float(getattr(x, attr)) for x in h} | ({float(spec.output.threshold)} if attr == "threshold" and spec.output.kind == "lif" else set())
        if len(vals) > 1:
            raise UserError(f"NIR graph: the layers have different {attr} values {sorted(vals)}; the run config has one "
                            f"{attr} for all {'layers' if attr == 'threshold' else 'hidden layers'}")
    d = json_copy(base)
    model = d.setdefault("model", {})
    model.update({"hidden": [x.size for x in h], "recurrent": [bool(x.recurrent) for x in h],
                  "tau_mem": float(h[0].tau_mem), "tau_syn": float(h[0].tau_syn), "threshold": float(h[0].threshold),
                  "out_tau_mem": float(spec.output.tau_mem), "out_tau_syn": float(spec.output.tau_syn),
                  "dt_ms": float(spec.dt), "grazing_eps": float(spec.grazing_eps),
                  "dtype": "float64" if any(v.dtype == np.float64 for v in params.values()) else "float32"})
    data = d.setdefault("data", {})
    data.update({"delay_copies": int(extra["delay_copies"]), "delay_ms": float(extra["delay_ms"]) if extra["delay_copies"] > 1
                 else float(data.get("delay_ms", 30.0))})
    loss = d.setdefault("loss", {})
    try:
        kind = get_loss(loss.get("name", "first_spike_inv")).output_kind
    except UserError:
        kind = None
    if kind != spec.output.kind:
        loss["name"] = _DEFAULT_LOSS[spec.output.kind]
    d = apply_overrides(d, list(sets))
    cfg = validate(d)
    check = build_spec(cfg, spec.n_in, spec.output.size)
    try:
        check_params(check, params)
    except UserError as e:
        raise UserError(f"the config (after --set) does not fit the imported network: {e}") from None
    if check.output.kind != spec.output.kind:
        raise UserError(f"loss {cfg.loss.name} needs a {check.output.kind!r} output layer, the NIR graph has {spec.output.kind!r}")
    dtype = np.float64 if cfg.model.dtype == "float64" else np.float32
    out.mkdir(parents=True, exist_ok=True)
    fio.write_text(out / "config.yaml", to_yaml(cfg))
    fio.save_npz(out / "best.npz", {**{f"param/{k}": v.astype(dtype) for k, v in params.items()}, "epoch": np.array(0)})
    fio.write_json(out / "nir_import.json", {"source": str(nir_file), "convention": extra["convention"],
                                             "delay_copies": extra["delay_copies"], "delay_ms": extra["delay_ms"],
                                             "metadata": {k: v for k, v in meta.items() if k != "eventprop_config"
                                                          and isinstance(v, (str, int, float, bool))}})
    return cfg, spec


def json_copy(d: dict) -> dict:
    import json

    return json.loads(json.dumps(d))
