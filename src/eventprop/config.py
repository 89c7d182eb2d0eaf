"""Run configuration: a validated, fully-defaulted tree (pydantic), loaded from YAML/JSON or the
embedded default, with dotted ``KEY=VALUE`` overrides.

Every section forbids unknown keys, so a typo fails before any work with one line naming the
key and what is allowed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .losses import LOSS_NAMES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AugmentConfig(_Strict):
    shift: int = Field(0, ge=0, description="random shift: channels moved by an integer in [-shift, shift] per sample")
    jitter: float = Field(0.0, ge=0, description="ID jitter sigma (channels) per spike")
    dilate: Optional[tuple[float, float]] = Field(None, description="random dilation factor range [min, max]")
    blend: int = Field(0, ge=0, description="number of blended samples added per epoch (0 = off)")
    blend_probs: tuple[float, float] = (0.5, 0.5)

    @field_validator("dilate")
    @classmethod
    def _dilate(cls, v):
        if v is not None and not (0 < v[0] <= v[1]):
            raise ValueError("expected [min, max] with 0 < min <= max")
        return v

    @field_validator("blend_probs")
    @classmethod
    def _probs(cls, v):
        if not all(0 <= p <= 1 for p in v):
            raise ValueError("probabilities must lie in [0, 1]")
        return v


class DataConfig(_Strict):
    name: Literal["yinyang", "mnist", "fashion_mnist", "shd", "ssc", "spikes"] = "yinyang"
    path: Optional[str] = Field(None, description="data folder (default: $EVENTPROP_DATA/<name> or ~/.cache/eventprop/<name>)")
    trial_ms: float = Field(30.0, gt=0, description="trial length T in ms; samples are cropped/padded to T")
    n_val: Optional[int] = Field(None, ge=0, description="validation samples split off the training set; null = the "
                                 "dataset's default (yinyang: 1000 generated; ssc: the official split; others: none)")
    download: bool = True
    limit_train: Optional[int] = Field(None, ge=1, description="use only the first N training samples")
    limit_test: Optional[int] = Field(None, ge=1, description="use only the first N test samples")
    delay_copies: int = Field(1, ge=1, description="delay-line input: copies of the input (1 = off)")
    delay_ms: float = Field(30.0, ge=0, description="delay between consecutive copies of the delay line")
    augment: AugmentConfig = AugmentConfig()
    on_grid: bool = Field(False, description="hold the data binned on the model's grid: 16-bit steps and channels, "
                          "4 bytes per spike (for SSC-sized sets); dilate/blend then see step-start times")


class InitConfig(_Strict):
    input_mean: float = 1.5
    input_sd: float = 0.78
    hidden_mean: float = 0.02
    hidden_sd: float = 0.01
    rec_mean: float = 0.0
    rec_sd: float = 0.02
    out_mean: float = 0.93
    out_sd: float = 0.1


class ModelConfig(_Strict):
    dt_ms: float = Field(0.1, gt=0)
    hidden: list[int] = Field(default_factory=lambda: [200], min_length=1)
    recurrent: Union[bool, list[bool]] = False
    tau_mem: float = Field(20.0, gt=0, description="hidden membrane time constant (ms)")
    tau_syn: float = Field(5.0, gt=0, description="hidden synaptic time constant (ms)")
    threshold: float = Field(1.0, gt=0)
    out_tau_mem: float = Field(20.0, gt=0)
    out_tau_syn: float = Field(5.0, gt=0)
    grazing_eps: float = Field(1e-2, gt=0, description="floor on tau_m dV/dt at a spike (grazing crossings)")
    dtype: Literal["float32", "float64"] = "float32"
    learn_tau: Union[bool, list[bool]] = Field(False, description="learn the hidden neurons' tau_mem and tau_syn "
                                               "(per neuron, by EventProp; a bool or one per hidden layer)")
    learn_out_tau: bool = Field(False, description="learn the output neurons' tau_mem and tau_syn too (not with the "
                                "max loss)")
    learn_delays: bool = Field(False, description="learn a delay per network input (ms, exact gradient of the "
                               "arrival times; arrivals rounded to the grid), initialised uniform in [0, max_delay_ms]")
    max_delay_ms: float = Field(100.0, ge=0, description="upper bound of learned input delays")
    learn_hidden_delays: bool = Field(False, description="learn an axonal delay per hidden neuron (ms; its spikes reach "
                                      "every target that much later; exact sub-step arrivals and gradient), "
                                      "initialised uniform in [0, max_hidden_delay_ms]")
    max_hidden_delay_ms: float = Field(20.0, ge=0, description="upper bound of learned hidden-neuron delays")
    neuron: Literal["lif", "alif"] = Field("lif", description="hidden neuron model: lif, or alif (adaptive threshold "
                                           "theta + A; A += adapt at each spike, decays with tau_adapt)")
    tau_adapt: float = Field(100.0, gt=0, description="alif: adaptation time constant (ms)")
    adapt: float = Field(0.1, ge=0, description="alif: threshold increment per spike (the authors' B_INCR)")
    het_tau: bool = Field(False, description="hetLIF: per-neuron hidden tau_mem and tau_syn drawn from Gamma(3, tau/3), "
                          "clipped to [3 ms, 3 tau_mem] and [1 ms, 3 tau_syn], seeded by train.seed")
    backend: Literal["auto", "cpu", "cuda"] = Field("cpu", description="where the engine runs: cpu (numba kernels), "
                                                    "cuda (NVIDIA GPU, the 'cuda' extra), auto (cuda when usable)")
    init: InitConfig = InitConfig()

    @field_validator("hidden")
    @classmethod
    def _pos(cls, v):
        if any(h < 1 for h in v):
            raise ValueError("hidden layer sizes must be >= 1")
        return v

    @model_validator(mode="after")
    def _rec_len(self):
        if isinstance(self.recurrent, list) and len(self.recurrent) != len(self.hidden):
            raise ValueError(f"recurrent: a list must have one entry per hidden layer ({len(self.hidden)})")
        if isinstance(self.learn_tau, list) and len(self.learn_tau) != len(self.hidden):
            raise ValueError(f"learn_tau: a list must have one entry per hidden layer ({len(self.hidden)})")
        return self

    def learn_tau_list(self) -> list[bool]:
        if isinstance(self.learn_tau, list):
            return list(self.learn_tau)
        return [bool(self.learn_tau)] * len(self.hidden)

    def recurrent_list(self) -> list[bool]:
        if isinstance(self.recurrent, list):
            return list(self.recurrent)
        return [bool(self.recurrent)] * len(self.hidden)


class LossConfig(_Strict):
    name: str = "first_spike_inv"
    tau0: float = Field(0.5, gt=0, description="first-spike losses: softmax temperature (ms)")
    tau1: float = Field(6.4, gt=0, description="first_spike: time scale of the exp term (ms)")
    alpha: float = Field(3e-3, ge=0, description="first-spike losses: weight of the push-earlier term")
    tau_acc: float = Field(20.0, gt=0, description="sum_input: accumulator time constant (ms)")

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        if v not in LOSS_NAMES:
            raise ValueError(f"unknown loss {v!r}; expected one of {', '.join(LOSS_NAMES)}")
        return v


class RegConfig(_Strict):
    k_upper: float = Field(0.0, ge=0, description="strength above the target (our units; see docs/losses.md)")
    k_lower: float = Field(0.0, ge=0, description="strength below the target")
    nu: float = Field(14.0, ge=0, description="target spikes per hidden neuron per trial")


class PlateauConfig(_Strict):
    enabled: bool = False
    fast: float = Field(0.8, ge=0, le=1)
    slow: float = Field(0.85, ge=0, le=1)
    factor: float = Field(0.5, gt=0, le=1)
    min_epochs: int = Field(50, ge=0)
    which: Literal["train", "val"] = "val"


class TrainConfig(_Strict):
    epochs: int = Field(40, ge=0)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(2e-3, gt=0)
    seed: int = 0
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    ease_in: bool = False
    ease_in_factor: float = Field(1.05, gt=1)
    lr_decay: float = Field(0.97, gt=0, le=1, description="multiply the learning rate by this after every epoch")
    plateau: PlateauConfig = PlateauConfig()
    input_dropout: float = Field(0.0, ge=0, lt=1)
    lift_silent: float = Field(0.0, ge=0, description="after each epoch, add this to the incoming feed-forward weights of "
                               "every hidden neuron that did not spike in any training sample of the epoch (0 = off)")
    select: Literal["train", "val", "test"] = Field("val", description="best epoch by train or val accuracy (test only if you insist)")
    threads: Optional[int] = Field(None, ge=1)
    eval_batch_size: int = Field(256, ge=1)
    checkpoint_every: int = Field(1, ge=1)
    tensorboard: bool = Field(False, description="also write the per-epoch metrics as TensorBoard scalars to "
                              "<run folder>/tensorboard (needs the 'tensorboard' extra: tensorboardX)")
    init_from: Optional[str] = Field(None, description="start from these parameters instead of the random initialisation: "
                                     "a checkpoint .npz or a results folder (its best.npz), e.g. one made by "
                                     "`eventprop import FILE.nir`; shapes must match the model")


class XvalConfig(_Strict):
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    folds: Optional[list[int]] = Field(None, min_length=1, description="speaker ids to leave out (default: all)")


class RunConfig(_Strict):
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    reg: RegConfig = RegConfig()
    train: TrainConfig = TrainConfig()
    xval: XvalConfig = XvalConfig()
    description: str = ""

    @model_validator(mode="after")
    def _grid(self):
        n = round(self.data.trial_ms / self.model.dt_ms)
        if n < 1 or abs(n * self.model.dt_ms - self.data.trial_ms) > 1e-9 * self.data.trial_ms:
            raise ValueError(f"data.trial_ms = {self.data.trial_ms} must be a whole number (>= 1) of "
                             f"model.dt_ms = {self.model.dt_ms} steps")
        return self


def _error_line(e: ValidationError) -> str:
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"])
    if not loc:
        return "config: " + err["msg"].replace("Value error, ", "")
    typ = err["type"]
    if typ == "extra_forbidden":
        parent = err["loc"][:-1]
        model = RunConfig
        for p in parent:
            if isinstance(p, int):
                continue
            f = model.model_fields.get(p)
            model = f.annotation if f is not None and isinstance(f.annotation, type) else model
        allowed = ", ".join(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else "?"
        return f"unknown config key '{loc}'; allowed here: {allowed}"
    msg = err["msg"].replace("Value error, ", "")
    inp = err.get("input")
    shown = repr(inp) if not isinstance(inp, dict) else "{...}"
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"config key '{loc}': {msg} (got {shown})"


def validate(d: dict) -> RunConfig:
    try:
        return RunConfig.model_validate(d)
    except ValidationError as e:
        raise ConfigError(_error_line(e)) from None


# The embedded default: Yin-Yang, trained in about a minute on 2 cores.
DEFAULT = {
    "description": "Embedded default: Yin-Yang (procedural, no download), 5-200-3, dt 0.1 ms, time-to-first-spike loss",
}


def load_file(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} not found")
    text = p.read_text()
    try:
        if p.suffix.lower() == ".json":
            d = json.loads(text)
        else:
            d = yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"config file {str(p)!r} is not valid YAML/JSON: {first}") from None
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ConfigError(f"config file {str(p)!r}: expected a mapping at the top level")
    return d


def parse_value(text: str):
    """A command-line value: YAML scalars and lists ('5', '1e-3', 'true', '[256, 128]', 'null')."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    d = json.loads(json.dumps(d))  # deep copy
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=5")
        key, _, val = item.partition("=")
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set {item!r}: empty key segment")
        node = d
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = {}
                node[p] = nxt
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {key}: '{p}' is a value, not a section")
            node = nxt
        node[parts[-1]] = parse_value(val)
    return d


def resolve(path: str | None = None, overrides: list[str] | None = None) -> RunConfig:
    base = dict(DEFAULT) if path is None else load_file(path)
    return validate(apply_overrides(base, overrides or []))


def to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(json.loads(cfg.model_dump_json()), sort_keys=False)


COVERED = {  # what the shipped gradient tests check against the exact simulator (tests/test_gradient_*.py)
    "dt_max_ms": 1.0,
    "dt_over_tau_max": 0.2,  # dt / min(tau_syn, tau_mem) (paper SHD: 1/5)
    "trial_max_ms": 1400.0,
    "hidden_layers_max": 2,
}


def regime_warnings(cfg) -> list[str]:
    """One line per way in which a run config leaves the regime that the gradient tests cover."""
    m = cfg.model
    out = []
    tau_min = min(m.tau_mem, m.tau_syn, m.out_tau_mem, m.out_tau_syn)
    if m.dt_ms > COVERED["dt_max_ms"]:
        out.append(f"model.dt_ms = {m.dt_ms:g} ms is above the {COVERED['dt_max_ms']:g} ms the gradient tests cover")
    if m.dt_ms > COVERED["dt_over_tau_max"] * tau_min:
        out.append(f"model.dt_ms = {m.dt_ms:g} ms is more than {COVERED['dt_over_tau_max']:g} x the shortest time "
                   f"constant ({tau_min:g} ms)")
    if cfg.data.trial_ms > COVERED["trial_max_ms"]:
        out.append(f"data.trial_ms = {cfg.data.trial_ms:g} ms is longer than the {COVERED['trial_max_ms']:g} ms the "
                   "gradient tests cover")
    if len(m.hidden) > COVERED["hidden_layers_max"]:
        out.append(f"{len(m.hidden)} hidden layers: the gradient tests cover at most {COVERED['hidden_layers_max']}")
    return out
