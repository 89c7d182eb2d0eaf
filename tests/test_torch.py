"""eventprop.torch: the engine as a torch autograd Function / nn.Module with EventProp gradients."""

import numpy as np
import pytest
torch = pytest.importorskip("torch", reason="eventprop.torch needs the torch extra (pip install torch)")

from eventprop import exact as xs
from eventprop.engine import ReadoutWeight
from eventprop.errors import UserError
from eventprop.events import batch_from_arrays
from eventprop.losses import get_loss, value_and_grad
from eventprop.network import InitSpec, LayerSpec, NetworkSpec, OutputSpec, init_params
from eventprop.torch import EventPropNet, readout

INIT = InitSpec(input_mean=1.2, input_sd=0.6, rec_mean=0.0, rec_sd=0.4, out_mean=0.3, out_sd=0.6)


def small(recurrent=True, n_steps=40, B=4, seed=0):
    spec = NetworkSpec(6, [LayerSpec(8, recurrent=recurrent)], OutputSpec(3), dt=1.0)
    rng = np.random.default_rng(seed)
    lists, samples = [], []
    for b in range(B):
        k = rng.integers(10, 40)
        key = np.unique(rng.integers(0, n_steps - 5, k) * 6 + rng.integers(0, 6, k))
        steps, units = key // 6, key % 6
        lists.append((steps, units))
        samples.append((steps.astype(np.float64), units, int(b % 3)))  # spike times on the grid
    labels = np.array([s[2] for s in samples])
    return spec, batch_from_arrays(lists, labels, n_steps, 1.0), samples


def test_torch_cross_entropy_equals_the_builtin_sum_loss():
    spec, batch, _ = small()
    net = EventPropNet(spec, INIT, seed=1, dtype=torch.float64)
    R = net(batch)
    loss = torch.nn.functional.cross_entropy(R, torch.as_tensor(batch.labels))
    loss.backward()
    value, grads, _, _ = value_and_grad(spec, net.numpy_params(), batch, get_loss("sum"))
    assert loss.item() == pytest.approx(value, rel=1e-12)
    for k, p in net.weights.items():
        np.testing.assert_allclose(p.grad.numpy(), grads[k], rtol=1e-10, atol=1e-14, err_msg=k)
        assert np.abs(grads[k]).sum() > 0


def test_custom_torch_loss_matches_exact_finite_differences():
    """A loss the library does not have (squared distance of the sum_exp readout to a target, then
    a softplus), through a torch layer after the SNN: the torch gradient along a random direction
    equals central differences of the same loss computed from the exact continuous-time simulator."""
    spec, batch, samples = small(recurrent=True, n_steps=40)
    T = 40.0
    params = init_params(spec, INIT, seed=2, dtype=np.float64)
    t = np.arange(41) * 1.0
    w = ReadoutWeight(np.exp(-t / T), 1.0 / T)
    target = torch.tensor([[0.2, -0.1, 0.3]], dtype=torch.float64)

    def custom(R):
        return torch.nn.functional.softplus(((R - target) ** 2).sum(1) - 0.05).mean()

    net = EventPropNet(spec, params=params, readout="integral", weight=w, dtype=torch.float64)
    custom(net(batch)).backward()
    rng = np.random.default_rng(5)
    direction = {k: rng.normal(size=v.shape) for k, v in params.items()}
    slope = sum(float((net.weights[k].grad.numpy() * direction[k]).sum()) for k in params)

    sum_exp = get_loss("sum_exp")

    def exact_loss(h):
        p = {k: params[k] + h * direction[k] for k in params}
        res = xs.simulate_batch(spec, p, samples, T, losses=[sum_exp])
        R = torch.tensor(np.array([r.integrals["sum_exp"] for r in res]))
        return custom(R).item()

    h = 1e-5
    fd = (exact_loss(h) - exact_loss(-h)) / (2 * h)
    assert abs(slope) > 1e-6
    # recurrent spikes in the same 1 ms step interact to first order in the engine: 0.15 % here
    assert slope == pytest.approx(fd, rel=1e-2)


def test_composes_with_torch_layers_before_and_after():
    """A torch parameter that produces the input weights (before) and a linear layer on the readout
    (after): the chain rule through the EventProp backward gives the finite-difference slope."""
    spec, batch, _ = small(recurrent=False)
    base = {k: torch.as_tensor(v) for k, v in init_params(spec, INIT, seed=3, dtype=np.float64).items()}
    scale = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    head = torch.nn.Linear(3, 2).double()
    y = torch.tensor([0, 1, 1, 0])

    def loss_of(s):
        ws = dict(base)
        ws["ff0"] = base["ff0"] * s
        return torch.nn.functional.cross_entropy(head(readout(spec, batch, ws)), y)

    loss_of(scale).backward()
    assert head.weight.grad is not None and torch.any(head.weight.grad != 0)
    with torch.no_grad():
        h = 1e-6
        fd = (loss_of(torch.tensor(1.0 + h, dtype=torch.float64)) -
              loss_of(torch.tensor(1.0 - h, dtype=torch.float64))).item() / (2 * h)
    assert scale.grad.item() == pytest.approx(fd, rel=1e-5)


def test_torch_optimiser_trains_it():
    spec, batch, _ = small()
    net = EventPropNet(spec, INIT, seed=4)
    opt = torch.optim.Adam(net.parameters(), lr=5e-2)
    y = torch.as_tensor(batch.labels)
    losses = []
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(net(batch), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_spiking_outputs_and_bad_requests():
    spec = NetworkSpec(6, [LayerSpec(8)], OutputSpec(3, kind="lif"), dt=1.0)
    _, batch, _ = small()
    net = EventPropNet(spec, InitSpec(input_mean=1.5, input_sd=0.6, out_mean=1.5, out_sd=0.5), readout="first_spike",
                       dtype=torch.float64)
    ts = net(batch)
    assert ts.shape == (4, 3) and torch.isfinite(ts).any()
    ts[torch.isfinite(ts)].sum().backward()  # earlier first spikes: a finite, non-zero gradient
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())
    assert any(p.grad.abs().sum() > 0 for p in net.parameters())
    with pytest.raises(UserError, match="readout"):
        EventPropNet(spec, readout="spikes")
    with pytest.raises(UserError, match="does not fit"):
        EventPropNet(spec, readout="integral")(batch)
    with pytest.raises(UserError, match="missing 'ff1'"):
        readout(spec, batch, {"ff0": net.weights["ff0"]})
