"""Print the engine-vs-exact gradient convergence table (a script, not a test).

For every case and loss of tests/test_gradient_fd.py: the relative error
||g_engine(dt) - g_FD|| / ||g_FD|| of the full gradient vector, where g_FD is the central
finite-difference gradient of the exact continuous-time simulation (eventprop/exact.py).

    .venv/bin/python tests/fd_convergence_report.py [--dts 1,0.1,0.01,0.001] [--sweep]

--sweep adds the larger networks of the slow test (8 hidden neurons, 3 outputs, T = 40 ms, six
seeds each; seeds whose finite differences are invalid are listed as skipped).
Output is a Markdown table, ready to paste into the docs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


from eventprop import exact as xs  # noqa: E402
import test_gradient_fd as T  # noqa: E402


def _row(label, loss, errs):
    return f"| {label} | {loss} | " + " | ".join(f"{e:.2e}" for e in errs) + " |"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dts", default="1,0.1,0.01,0.001", help="comma-separated dt values in ms")
    ap.add_argument("--sweep", action="store_true", help="also the larger networks over six seeds")
    args = ap.parse_args(argv)
    dts = [float(x) for x in args.dts.split(",")]
    t0 = time.time()
    print("Relative gradient error ||g_engine(dt) - g_FD|| / ||g_FD|| (float64; FD of the exact "
          f"continuous-time simulation, h = {T.H_FD:g})\n")
    print("| case | loss | " + " | ".join(f"dt = {dt:g} ms" for dt in dts) + " |")
    print("|---|---|" + "---|" * len(dts))
    for name, d in T.CASES.items():
        if name == "lif_phantom":
            continue
        case, fd = T.get_case(name), T.get_fd(name)
        T.check_case_preconditions(case, fd)
        for loss_name in d.losses:
            if name == "ffwd" and loss_name == "max":
                continue
            loss = T.make_loss(loss_name)
            errs = [T.rel_err(T.engine_grad(case, loss, dt)[1], fd.grads[loss_name]) for dt in dts]
            print(_row(name, loss_name, errs))
    # phantom spikes: engine vs exact gradient + the phantom's loss source at T
    for loss_name in T.LIF:
        case, loss, _, _, target = T.phantom_target(loss_name)
        errs = [T.rel_err(T.engine_grad(case, loss, dt)[1], target) for dt in dts]
        print(_row("lif_phantom (vs exact + phantom source at T)", loss_name, errs))
    # max loss with maxima pinned at inhibitory spike arrivals: the engine includes the
    # spike-timing term; the paper's kick-only scheme is the engine minus that term
    case, loss, fd_grad, term = T._max_kink_setup()
    eng, paper = [], []
    for dt in dts:
        g = T.engine_grad(case, loss, dt)[1]
        eng.append(T.rel_err(g, fd_grad))
        paper.append(T.rel_err({k: g[k] - term[k] for k in g}, fd_grad))
    print(_row("ffwd, maxima on spike arrivals: engine", "max", eng))
    print(_row("ffwd, maxima on spike arrivals: paper eq. 37 (kick only)", "max", paper))
    if args.sweep:
        print("\nLarger networks (8 hidden, 3 outputs, T = 40 ms), seeds 0-5\n")
        print("| case | seed | loss | " + " | ".join(f"dt = {dt:g} ms" for dt in dts) + " |")
        print("|---|---|---|" + "---|" * len(dts))
        for name, d in T.SWEEP.items():
            for seed in range(6):
                case = T.build_case(name, seed=seed, d=d)
                losses = [T.make_loss(n) for n in d.losses]
                fd = xs.fd_gradients(case.spec, case.params, case.samples, case.T, losses, h=T.H_FD)
                try:
                    T.check_case_preconditions(case, fd)
                except AssertionError as e:
                    print(f"| {name} | {seed} | (skipped: {str(e).splitlines()[0][:60]}) |" + " |" * len(dts))
                    continue
                for loss in losses:
                    errs = [T.rel_err(T.engine_grad(case, loss, dt)[1], fd.grads[loss.name]) for dt in dts]
                    print(f"| {name} | {seed} | {loss.name} | " + " | ".join(f"{e:.2e}" for e in errs) + " |")
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
