"""Adam and the learning-rate schedules of the authors' code, on plain dicts of arrays."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Adam:
    """Adam (Kingma & Ba) with standard bias correction; state is plain arrays (checkpointable)."""

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    step: int = 0
    m: dict = field(default_factory=dict)
    v: dict = field(default_factory=dict)

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float | None = None) -> None:
        lr = self.lr if lr is None else lr
        self.step += 1
        c1 = 1.0 - self.beta1**self.step
        c2 = 1.0 - self.beta2**self.step
        a1 = lr / c1
        for k, g in grads.items():
            if k not in self.m:
                self.m[k] = np.zeros(g.shape, dtype=np.float64)
                self.v[k] = np.zeros(g.shape, dtype=np.float64)
            m = self.m[k]
            v = self.v[k]
            g = np.array(g, dtype=np.float64)  # a private copy, squared in place below
            m *= self.beta1
            m += (1.0 - self.beta1) * g
            g *= g
            g *= 1.0 - self.beta2
            v *= self.beta2
            v += g
            den = np.sqrt(v / c2)
            den += self.eps
            np.divide(m, den, out=den)
            den *= a1
            params[k] -= den.astype(params[k].dtype, copy=False)

    def state(self) -> dict[str, np.ndarray]:
        out = {"adam_step": np.array(self.step)}
        for k in self.m:
            out[f"adam_m/{k}"] = self.m[k]
            out[f"adam_v/{k}"] = self.v[k]
        return out

    def load_state(self, d: dict[str, np.ndarray]) -> None:
        self.step = int(d["adam_step"])
        self.m = {k[len("adam_m/"):]: np.array(v, dtype=np.float64) for k, v in d.items() if k.startswith("adam_m/")}
        self.v = {k[len("adam_v/"):]: np.array(v, dtype=np.float64) for k, v in d.items() if k.startswith("adam_v/")}


@dataclass
class Schedule:
    """Learning-rate schedule: optional ease-in (start at lr/1000, x factor per batch, capped at the
    current base rate), per-epoch decay, and the authors' plateau halving (two exponential moving
    averages of accuracy; halve the base rate when the fast one is not above the slow one)."""

    base: float
    ease_in: bool = False
    ease_factor: float = 1.05
    decay: float = 1.0
    plateau: bool = False
    a_fast: float = 0.8
    a_slow: float = 0.85
    p_factor: float = 0.5
    min_epochs: int = 50
    current: float = 0.0
    ema_fast: float = 0.0
    ema_slow: float = 0.0
    last_reduction: int = 0

    def __post_init__(self):
        if self.current == 0.0:
            self.current = self.base / 1000.0 if self.ease_in else self.base

    def lr(self) -> float:
        return self.current

    def after_batch(self) -> None:
        if self.ease_in and self.current < self.base:
            self.current = min(self.current * self.ease_factor, self.base)

    def after_epoch(self, epoch: int, acc: float | None) -> None:
        if self.decay != 1.0:
            self.base *= self.decay
            self.current = min(self.current, self.base) if self.ease_in else self.base
        if self.plateau and acc is not None:
            self.ema_fast = self.a_fast * self.ema_fast + (1 - self.a_fast) * acc
            self.ema_slow = self.a_slow * self.ema_slow + (1 - self.a_slow) * acc
            if epoch - self.last_reduction > self.min_epochs and self.ema_fast <= self.ema_slow:
                self.base *= self.p_factor
                self.current = self.base
                self.last_reduction = epoch

    def state(self) -> dict[str, np.ndarray]:
        return {f"sched/{k}": np.array(getattr(self, k)) for k in
                ("base", "current", "ema_fast", "ema_slow", "last_reduction")}

    def load_state(self, d) -> None:
        for k in ("base", "current", "ema_fast", "ema_slow"):
            setattr(self, k, float(d[f"sched/{k}"]))
        self.last_reduction = int(d["sched/last_reduction"])
