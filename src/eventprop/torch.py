"""EventProp inside PyTorch: the engine as a ``torch.autograd.Function`` and an ``nn.Module``.

The forward pass runs the event-driven engine and returns a readout of the output layer as a
tensor; the backward pass is the EventProp adjoint pass driven by the incoming dL/dreadout (the
paper's Appendix A), so any torch loss of the readouts, and any torch layer after them, trains
the spiking network with exact gradients. Torch optimisers and schedulers work on the module's
``nn.Parameter`` weights as usual. Needs the optional extra: ``pip install 'eventprop[torch]'``.

Readouts (``readout=``): ``"integral"`` (1/T) int w(t) V_k dt (w = 1 unless ``weight`` is given,
e.g. ``ReadoutWeight(np.exp(-t/T), 1/T)`` for sum_exp), ``"vmax"`` (max of V_k), ``"trace"`` (V_k at
every grid time, shape (B, N+1, C)) for leaky-integrator outputs, and ``"first_spike"`` (first spike
time of each output, ms; inf when it does not spike, with a zero gradient there) for spiking outputs.

    import torch
    from eventprop.torch import EventPropNet
    net = EventPropNet(spec, init, seed=0)                  # spec: eventprop.network.NetworkSpec
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    R = net(batch)                                          # batch: eventprop.events.SpikeBatch
    loss = torch.nn.functional.cross_entropy(R, torch.as_tensor(batch.labels))
    opt.zero_grad(); loss.backward(); opt.step()

The engine runs on the CPU in float32 or float64 (the dtype of the weights); tensors on another
device are moved to the CPU for it and the gradients moved back.
"""

from __future__ import annotations

import numpy as np

try:
    import torch
except ImportError:  # tests/test_missing_extras.py runs this without torch
    from .errors import MissingExtra

    # `from None`: the hint alone, not the chain of torch's own import failure
    raise MissingExtra("eventprop.torch needs PyTorch: pip install 'eventprop[torch]'") from None

from .engine import ReadoutGrads, backward, forward
from .errors import UserError
from .network import InitSpec, NetworkSpec, init_params

READOUTS = ("integral", "vmax", "trace", "first_spike")


class EventPropFunction(torch.autograd.Function):
    """readout = EventPropFunction.apply(spec, batch, readout, weight, names, *weight_tensors)."""

    @staticmethod
    def forward(ctx, spec, batch, readout, weight, names, *tensors):
        params = {k: t.detach().cpu().numpy() for k, t in zip(names, tensors)}
        fw = forward(spec, params, batch, weight=weight, trace=(readout == "trace"), max_kinks=(readout == "vmax"))
        out = getattr(fw, readout)
        ctx.fw, ctx.readout, ctx.names = fw, readout, names
        ctx.devices = [t.device for t in tensors]
        ctx.dtypes = [t.dtype for t in tensors]
        return torch.from_numpy(np.ascontiguousarray(out)).to(device=tensors[0].device, dtype=tensors[0].dtype)

    @staticmethod
    def backward(ctx, g_out):
        g = g_out.detach().cpu().numpy().astype(np.float64)
        if ctx.readout == "first_spike":
            g = np.where(np.isfinite(ctx.fw.first_spike), g, 0.0)  # no spike: no time to move
        grads = backward(ctx.fw, ReadoutGrads(**{ctx.readout: g}))
        out = [torch.from_numpy(np.ascontiguousarray(grads[k])).to(device=d, dtype=t)
               for k, d, t in zip(ctx.names, ctx.devices, ctx.dtypes)]
        return (None, None, None, None, None, *out)


def readout(spec: NetworkSpec, batch, weights: dict, readout: str = "integral", weight=None):
    """Functional form: the readout of ``batch`` for weight tensors ``weights`` (a dict named like
    the engine's parameters: ff0, rec0, ..., ff<L>), differentiable with respect to every weight
    tensor (so torch layers may produce the weights too)."""
    if readout not in READOUTS:
        raise UserError(f"readout {readout!r}: expected one of {', '.join(READOUTS)}")
    names = list(spec.param_shapes())
    missing = [k for k in names if k not in weights]
    if missing:
        raise UserError(f"weights: missing {missing[0]!r}; the network needs {', '.join(names)}")
    if (readout == "first_spike") != (spec.output.kind == "lif"):
        raise UserError(f"readout {readout!r} does not fit a {spec.output.kind!r} output layer")
    return EventPropFunction.apply(spec, batch, readout, weight, names, *[weights[k] for k in names])


class EventPropNet(torch.nn.Module):
    """A spiking network whose weights are ``nn.Parameter`` s (``net.weights['ff0']``, ...) and whose
    forward pass returns a readout tensor with EventProp gradients."""

    def __init__(self, spec: NetworkSpec, init: InitSpec | None = None, seed: int = 0, readout: str = "integral",
                 weight=None, dtype=torch.float32, params: dict | None = None):
        super().__init__()
        if readout not in READOUTS:
            raise UserError(f"readout {readout!r}: expected one of {', '.join(READOUTS)}")
        self.spec, self.readout, self.weight = spec, readout, weight
        np_dtype = np.float64 if dtype == torch.float64 else np.float32
        p = params if params is not None else init_params(spec, init, seed=seed, dtype=np_dtype)
        self.weights = torch.nn.ParameterDict(
            {k: torch.nn.Parameter(torch.as_tensor(np.asarray(p[k], dtype=np_dtype))) for k in spec.param_shapes()})

    def forward(self, batch):
        return readout(self.spec, batch, dict(self.weights), self.readout, self.weight)

    def numpy_params(self) -> dict:
        """The weights as the engine's plain dict of arrays (e.g. to save a checkpoint)."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.weights.items()}
