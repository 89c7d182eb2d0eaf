"""Command line: ``eventprop train | eval | xval | sweep | gradcheck | export | import | config show | plot | analyse | bench``.

User mistakes (bad config, missing file, ...) print one line ``error: ...`` and exit with status 2,
without a traceback.
"""

from __future__ import annotations

import datetime as _dt
import sys
from pathlib import Path

import click

from . import __version__
from .errors import UserError


def _fail(e: Exception) -> None:
    click.echo(f"error: {e}", err=True)
    sys.exit(2)


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            _fail(e)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="eventprop")
def main():
    """Train spiking neural networks with exact EventProp gradients.

    Run `eventprop train` to train the embedded default (Yin-Yang, no download).
    """


def _resolve(config, sets, data_path=None):
    from .config import resolve

    sets = list(sets)
    if data_path:  # --data PATH = --set data.path=PATH (applied last)
        sets.append(f"data.path={data_path}")
    return resolve(config, sets)


def _data_option(f):
    return click.option("--data", "data_path", type=click.Path(), metavar="PATH",
                        help="data folder or file (shorthand for --set data.path=PATH)")(f)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _default_out(cfg) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{stamp}-{cfg.data.name}-{cfg.loss.name}"


@main.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="override a setting, e.g. train.epochs=5 (repeatable)")
@_data_option
@click.option("--out", type=click.Path(file_okay=False), help="results folder (default: runs/<timestamp>-<data>-<loss>)")
@click.option("--resume", is_flag=True, help="continue the run in --out from its last checkpoint")
@click.option("--quiet", is_flag=True, help="no progress bar")
def train(config, sets, data_path, out, resume, quiet):
    """Train a network (CONFIG: YAML/JSON file; default: the embedded Yin-Yang job)."""
    from .train import run

    if resume and not out:
        raise UserError("--resume needs --out DIR (the folder of the run to continue)")
    if resume and config is None and (Path(out) / "config.yaml").is_file():
        config = str(Path(out) / "config.yaml")  # continue the run with its own config
    cfg = _resolve(config, sets, data_path)
    out_dir = Path(out) if out else _default_out(cfg)
    summary = run(cfg, out_dir, resume=resume, quiet=quiet)
    click.echo(done_line(summary, out_dir))


def done_line(summary: dict, out_dir) -> str:
    """The final line of `eventprop train`: accuracies at the selected epoch (as the epoch lines
    print them), only those that the run has (no "val acc None" without a validation set)."""
    accs = [f"{name} acc {summary[key]:.4f}" for name, key in
            (("train", "train_accuracy"), ("val", "val_accuracy"), ("test", "test_accuracy"))
            if summary.get(key) is not None]
    spe = summary.get("seconds_per_epoch")
    return (f"done: best epoch {summary['best_epoch']} ({summary['selection']}): {', '.join(accs) or 'no accuracy'}; "
            f"{'n/a' if spe is None else f'{spe:.1f}'} s/epoch; results in {out_dir}")


@main.command("eval")
@click.argument("checkpoint", type=click.Path(dir_okay=True))
@click.option("--config", "config", type=click.Path(dir_okay=False), help="config (default: config.yaml beside the checkpoint)")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="override a setting, e.g. data.path=...")
@_data_option
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
def eval_(checkpoint, config, sets, data_path, split):
    """Evaluate a trained network (CHECKPOINT: a .npz file or a results folder, which uses best.npz)."""
    from .train import build_loss, build_spec, evaluate, load_checkpoint, load_data, n_steps_of

    ck = Path(checkpoint)
    if not ck.exists():
        raise UserError(f"{str(ck)!r} does not exist (expected a results folder or a checkpoint .npz)")
    if ck.is_dir():
        if not (ck / "best.npz").is_file() and (ck / "checkpoint.npz").is_file():
            ck = ck / "checkpoint.npz"
        else:
            ck = ck / "best.npz"
        if not ck.is_file():
            raise UserError(f"{str(ck.parent)!r} holds no checkpoint (best.npz or checkpoint.npz): not a results folder?")
    if config is None:
        config = str(ck.parent / "config.yaml")
        if not Path(config).is_file():
            raise UserError(f"no config.yaml beside {str(ck)!r}; pass --config")
    cfg = _resolve(config, sets, data_path)
    from .engine import get_backend

    get_backend(cfg.model.backend)  # a one-line error now if it cannot run here
    params = load_checkpoint(ck)
    data = load_data(cfg)
    ds = data.get(split)
    if ds is None:
        raise UserError(f"dataset {cfg.data.name} has no {split} split in this config")
    spec = build_spec(cfg, data["train"].n_units * cfg.data.delay_copies, data["train"].n_classes)
    from .network import check_params

    check_params(spec, params)
    res = evaluate(spec, params, ds, build_loss(cfg), n_steps_of(cfg), cfg.train.eval_batch_size,
                   cfg.data.delay_copies, cfg.data.delay_ms, progress=f"eval {split}")
    click.echo(f"{split}: accuracy {res.accuracy:.4f} ({int((res.pred == res.labels).sum())}/{len(res.labels)}), loss {res.loss:.4f}")


def _ray_options(f):
    f = click.option("--max-failures", type=int, default=3, show_default=True,
                     help="Ray retries of a trial whose worker died (it resumes from its checkpoint)")(f)
    f = click.option("--cpus-per-trial", type=int, default=1, show_default=True,
                     help="cores per trial (its engine threads); trials run in parallel on the rest")(f)
    f = click.option("--address", metavar="HOST:PORT",
                     help="join a running Ray cluster (`ray start --head`); default: start Ray on this machine")(f)
    return f


@main.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE")
@_data_option
@click.option("--out", type=click.Path(file_okay=False), help="folder for the fold runs and the table")
@click.option("--ray/--no-ray", "use_ray", default=None,
              help="folds x seeds as parallel trials on Ray Tune (default: when the 'ray' extra is installed)")
@_ray_options
@click.option("--quiet", is_flag=True)
def xval(config, sets, data_path, out, use_ray, address, cpus_per_trial, max_failures, quiet):
    """Leave-one-speaker-out cross-validation, repeated over xval.seeds; writes xval.csv and xval.md.

    With the 'ray' extra installed (or --ray), the folds x seeds run as parallel trials on Ray
    Tune, like `eventprop sweep`; otherwise one after another. Rerunning resumes either way.
    """
    from .sweep import RAY_HINT, have_ray
    from .xval import run_xval

    cfg = _resolve(config, sets, data_path)
    if use_ray and not have_ray():
        raise UserError(f"xval --ray needs Ray Tune: {RAY_HINT}")
    if address and use_ray is False:
        raise UserError("--address needs Ray; drop --no-ray")
    if use_ray is None:
        use_ray = have_ray()
        if not use_ray:
            click.echo(f"xval: folds run one after another; {RAY_HINT} runs them in parallel", err=True)
    out_dir = Path(out) if out else _default_out(cfg).with_name(_default_out(cfg).name + "-xval")
    table = run_xval(cfg, out_dir, quiet=quiet, use_ray=use_ray, address=address, cpus_per_trial=cpus_per_trial,
                     max_failures=max_failures)
    click.echo(table)


@main.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--grid", "grid", multiple=True, metavar="KEY=V1,V2,...",
              help="values of a setting to sweep, e.g. train.lr=1e-3,2e-3 (repeatable; all combinations)")
@click.option("--seeds", metavar="S1,S2,...", help="seeds per combination (default: the config's train.seed)")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="override a setting for every trial")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="sweep folder (rerun to resume)")
@_ray_options
@click.option("--scheduler", type=click.Choice(["asha"]), help="early stopping of poor trials (large grids)")
@click.option("--quiet", is_flag=True, help="no progress line")
def sweep(config, grid, seeds, sets, out, address, cpus_per_trial, max_failures, scheduler, quiet):
    """Grid x seeds as parallel trials on Ray Tune (the 'ray' extra); one run folder per trial.

    Writes OUT/sweep.csv (one row per trial) and OUT/sweep.md (mean ± sd per configuration, best
    configuration: validation accuracy at the epoch of best training accuracy). Rerunning the
    command skips finished trials and resumes unfinished ones.
    """
    from .sweep import sweep as run_sweep

    rows, table, interrupted = run_sweep(config, list(sets), list(grid), seeds, out, address=address,
                                         cpus_per_trial=cpus_per_trial, scheduler=scheduler,
                                         max_failures=max_failures, quiet=quiet, log=click.echo)
    click.echo(table)
    if interrupted:
        sys.exit(130)
    if any(r["status"].startswith(("error", "failed")) for r in rows):
        sys.exit(1)


@main.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="override a setting (repeatable)")
@_data_option
@click.option("--checkpoint", type=click.Path(), help="check at trained weights (a .npz or a results folder)")
@click.option("--channels", type=int, default=50, show_default=True, help="input channels kept")
@click.option("--hidden", type=int, default=30, show_default=True, help="neurons kept per hidden layer")
@click.option("--samples", type=int, default=2, show_default=True, help="training samples used")
@click.option("--seed", type=int, default=0, show_default=True, help="which channels, neurons and samples")
@click.option("--finer", type=float, multiple=True, default=(0.25,), show_default=True,
              help="also show the engine at these time steps in units of model.dt_ms (repeatable)")
def gradcheck(config, sets, data_path, checkpoint, channels, hidden, samples, seed, finer):
    """Is the gradient right in your regime? Engine vs exact continuous-time gradient.

    Builds a reduced network of CONFIG's kind (some input channels and hidden neurons, weights
    scaled to the full network's drive, a few real training samples, the same trial length, dt,
    time constants and loss) and prints, per weight array, the loss slope along the engine's
    -gradient as the engine predicts it and as finite differences of an exact continuous-time
    simulation measure it. Exit status 1 when the verdict is not OK. The regulariser is not
    checked (it is a pseudo-gradient).
    """
    from . import gradcheck as gc
    from .train import load_checkpoint

    cfg = _resolve(config, sets, data_path)
    params = None
    if checkpoint:
        ck = Path(checkpoint)
        params = load_checkpoint(ck / "best.npz" if ck.is_dir() else ck)
        params = {k: v.astype("float64") for k, v in params.items()}
    p = gc.problem_from_config(cfg, params, n_in=channels, n_hidden=hidden, n_samples=samples, seed=seed)
    dt = p.spec.dt
    click.echo(f"{p.note}; {_plural(len(p.samples), 'sample')} of {cfg.data.name}, T = {p.T:g} ms, dt = {dt:g} ms, "
               f"loss {p.loss.name}; exact simulation running ...")
    r = gc.check(p, dt, extra_dts=tuple(f * dt for f in finer))
    click.echo(f"hidden spikes per neuron and sample: exact {r.exact_spikes:.1f}, engine {r.engine_spikes:.1f}")
    click.echo(r.table())
    click.echo(gc.verdict(r))
    if not r.ok:
        sys.exit(1)


@main.command("export")
@click.argument("source", type=click.Path())
@click.option("--nir", "nir_path", required=True, type=click.Path(dir_okay=False), help="the .nir file to write")
@click.option("--delay-line", type=click.Choice(["nodes", "expanded"]), default="nodes", show_default=True,
              help="a delay-line input as NIR Delay nodes, or as one Input of all copies with the delays in the metadata")
@click.option("--convention", type=click.Choice(["nir", "snntorch"]), default="nir", show_default=True,
              help="how a spike is read: NIR's unit Dirac delta, or snnTorch's import (unit pulse of 0.1 ms, r = tau_mem/0.1 ms)")
def export(source, nir_path, delay_line, convention):
    """Export a trained network (SOURCE: a results folder or a checkpoint .npz) to NIR (docs/interop.md)."""
    from .nir_io import export_run

    spec, path = export_run(source, nir_path, delay_line=delay_line, convention=convention)
    click.echo(f"wrote {path}: {spec.n_in}-{'-'.join(str(h.size) for h in spec.hidden)}-{spec.output.size} "
               f"({'recurrent' if any(h.recurrent for h in spec.hidden) else 'feed-forward'}, {spec.output.kind} output)")


@main.command("import")
@click.argument("nir_file", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="folder to write (config.yaml, best.npz)")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="config for data, loss and training (default: the one an eventprop export stored, else the embedded default)")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="override a setting, e.g. data.name=shd (repeatable)")
@click.option("--convention", type=click.Choice(["nir", "snntorch"]), default=None,
              help="how the graph reads a spike (default: from its metadata, else nir)")
def import_(nir_file, out, config_path, sets, convention):
    """Import a NIR graph as a checkpoint: `eventprop eval OUT` evaluates it, `train --set train.init_from=OUT`
    fine-tunes it with EventProp."""
    from .nir_io import import_to_run

    cfg, spec = import_to_run(nir_file, out, config=config_path, sets=sets, convention=convention)
    click.echo(f"wrote {out}: {spec.n_in}-{'-'.join(str(h.size) for h in spec.hidden)}-{spec.output.size} "
               f"({spec.output.kind} output), data {cfg.data.name}, loss {cfg.loss.name}; "
               f"evaluate with: eventprop eval {out}; fine-tune with: {finetune_command(out)}")


def finetune_command(out) -> str:
    """The command that fine-tunes an imported network: the folder's config (its network settings
    fit the imported weights) and train.init_from the folder."""
    import shlex

    out = str(out)
    return (f"eventprop train {shlex.quote(str(Path(out) / 'config.yaml'))} --set train.init_from={shlex.quote(out)} "
            f"--out {shlex.quote(out.rstrip('/') + '-finetuned')}")


@main.group()
def config():
    """Inspect configurations."""


@config.command("show")
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE")
def config_show(config, sets):
    """Print the fully resolved config with every default."""
    from .config import to_yaml

    click.echo(to_yaml(_resolve(config, sets)), nl=False)


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), default="figures", show_default=True)
@click.option("--sample", type=int, default=0, show_default=True, help="test sample for raster / lambda plots")
def plot(runs, out, sample):
    """Figures from result folders: learning curves, summary bars, spike raster, lambda traces.

    A sweep folder (holding sweep.csv, from `eventprop sweep`) gives sweep_bars.png: mean ± sd
    per configuration (Fig. 5 style)."""
    from .plots import plot_runs, plot_sweep

    sweeps = [Path(r) for r in runs if (Path(r) / "sweep.csv").is_file()]
    plain = [Path(r) for r in runs if not (Path(r) / "sweep.csv").is_file()]
    written = []
    for s in sweeps:
        written += plot_sweep(s, Path(out) / s.name if len(sweeps) > 1 else Path(out))
    if plain:
        written += plot_runs(plain, Path(out), sample=sample)
    for p in written:
        click.echo(p)


@main.command()
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), help="folder for the figures (default: RUN/analysis)")
@click.option("--class", "cls", type=int, help="class to analyse (default: that of --sample, else of the first sample)")
@click.option("--sample", type=int, help="sample of the split whose raster and adjoints are shown")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option("--top", type=int, default=10, show_default=True, help="most active hidden neurons shown for the class")
def analyse(run, out, cls, sample, split, top):
    """The paper's failure analysis of a run: adjoints and what hidden spikes receive (Fig. 2),
    output weights against hidden activity (Fig. 3), spike counts and gradient norms over training.

    Needs a run with leaky-integrator outputs (losses xentropy, sum, sum_exp, max, ...): runs
    with spiking outputs (the first-spike losses, e.g. the default Yin-Yang job) are refused;
    train with e.g. --set loss.name=sum to analyse.

    Writes PNGs and analysis.json (Pearson r of weight and spike count for every class, sums of
    lambda_V - lambda_I per top neuron, silent fraction) to --out.
    """
    from .analyse import analyse as run_analysis

    res = run_analysis(Path(run), Path(out) if out else None, cls=cls, sample=sample, split=split, top=top)
    click.echo(f"class {res['class']}, {res['split']} sample {res['sample']} (predicted {res['predicted']}): "
               f"{res['n_top_negative']} of {len(res['top_neurons'])} most active neurons receive a negative sum of "
               f"lambda_V - lambda_I; Pearson r(weight, spike count) over classes "
               f"{res['pearson_weight_rate_mean']} +- {res['pearson_weight_rate_sd']}; hidden silent fraction "
               f"{res['hidden_silent_fraction']}")
    for f in res["files"] + [str(Path(res["files"][0]).parent / "analysis.json")]:
        click.echo(f)


@main.command()
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--repeats", type=int, default=10, show_default=True, help="timed training steps per measurement")
@click.option("--torch/--no-torch", "use_torch", default=True, show_default=True,
              help="also run the BPTT baselines, dense PyTorch and snnTorch (need the 'bench' extra)")
@click.option("--spikes", type=float, default=11000.0, show_default=True, help="input spikes per sample")
@click.option("--hidden", type=int, default=256, show_default=True)
@click.option("--trainer/--no-trainer", default=True, show_default=True,
              help="also time the whole trainer (augmentation, batching, Adam, evaluation) on the paper's SHD recipe")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="also write the numbers to this file")
@click.option("--data", "data_path", type=click.Path(exists=True), metavar="PATH",
              help="instead: real SHD-layout data (e.g. ../shared/data/spoken-dev) with --config, the whole trainer "
                   "and snnTorch on the same batches")
@click.option("--config", "config", type=click.Path(exists=True, dir_okay=False),
              help="with --data: the run config (default: configs/shd_sum_exp_recurrent.yaml)")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="with --data: override a config setting")
def bench(threads, repeats, use_torch, spikes, hidden, trainer, json_out, data_path, config, sets):
    """Speed and memory on an SHD-shaped workload, EventProp vs dense surrogate-gradient BPTT."""
    from . import io as fio
    from .bench import run_bench, run_data_bench

    if (config or sets) and not data_path:
        raise UserError("bench --config / --set: only with --data PATH (a run config on real data)")
    if use_torch:
        try:
            import snntorch  # noqa: F401
            import torch  # noqa: F401
        except ImportError:
            raise UserError("the BPTT baselines need torch and snntorch: pip install 'eventprop[bench]', "
                            "or pass --no-torch") from None
    if data_path:
        res = run_data_bench(data_path, config, threads=threads, repeats=repeats, snntorch_baseline=use_torch,
                             sets=sets, echo=click.echo)
    else:
        res = run_bench(threads=threads, repeats=repeats, torch_baseline=use_torch, snntorch_baseline=use_torch,
                        spikes=spikes, hidden=hidden, trainer=trainer, echo=click.echo)
    if json_out:
        fio.write_json(json_out, res)


if __name__ == "__main__":  # pragma: no cover
    main()
