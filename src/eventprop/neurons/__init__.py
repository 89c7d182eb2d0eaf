"""Neuron models, one module each (docs/method.md, "Neuron models").

A model is a hybrid system: linear dynamics between events, an event function (the threshold
condition), a jump map at its own spikes, and the adjoint that follows from them. Each module
holds the model's numba pieces, and the engine's kernels (eventprop.engine._kernels, compiled for
the CPU and for CUDA) reach them only through the model interface of ``hooks``:

* ``lif``  - leaky integrate-and-fire with exponential synaptic current (every layer; the output
  layer is LIF or its non-spiking leaky integrator);
* ``alif`` - adaptive LIF (hidden layers): LIF whose threshold theta + A rises by ``adapt`` at each
  of its spikes and relaxes with ``tau_adapt``.

:data:`MODELS` describes what each model supports, for the checks that turn an unsupported
combination into a one-line error before anything runs. Adding a model: a module with the
interface's pieces (``hooks``), its entry here and its branch in ``hooks``, and its reference
(tests/reference.py) and exact simulator (eventprop.exact) versions with their tests
(docs/method.md, "Adding a neuron model").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NeuronModel:
    name: str
    summary: str
    params: tuple[str, ...]  # LayerSpec fields of the model beyond tau_mem, tau_syn, threshold
    learn_tau: bool  # learned time constants implemented
    backends: tuple[str, ...]
    nir: bool  # NIR export / import
    code: int  # the kernels' model code (eventprop.neurons.hooks dispatches on it)
    adapts: bool  # has the threshold-adaptation state A (the module's ADAPTS)


MODELS = {
    "lif": NeuronModel("lif", "leaky integrate-and-fire, exponential synaptic current", (), True, ("cpu", "cuda"),
                       True, 0, False),
    "alif": NeuronModel("alif", "adaptive LIF: threshold theta + A, A += adapt at a spike, decays with tau_adapt",
                        ("tau_adapt", "adapt"), True, ("cpu", "cuda"), False, 1, True),
}
