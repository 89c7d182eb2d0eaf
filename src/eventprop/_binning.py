"""Numba kernels that turn ragged events into per-step CSR spike batches (see events.py)."""

import numpy as np
from numba import njit


@njit(cache=True)
def bin_all(times, units, offsets, scale, dt, n_steps, n_units, out_s, out_u):
    """Bin every sample onto the grid: step = floor(t / dt) with t = times * scale, cropped to
    [0, n_steps), sorted by step then unit, at most one spike per (unit, step). Writes the steps
    and units to out_s[:pos], out_u[:pos] (as long as times); returns (pos, offsets)."""
    S = offsets.shape[0] - 1
    out_off = np.zeros(S + 1, dtype=np.int64)
    count = np.zeros(n_steps + 1, dtype=np.int64)
    last = np.full(n_units, -1, dtype=np.int64)
    pos = 0
    for s in range(S):
        a, b = offsets[s], offsets[s + 1]
        for k in range(n_steps + 1):
            count[k] = 0
        for e in range(a, b):
            st = int(np.floor(times[e] * scale / dt + 1e-9))  # grid-aligned times land in their own step
            if 0 <= st < n_steps and 0 <= units[e] < n_units:
                count[st + 1] += 1
        for k in range(n_steps):
            count[k + 1] += count[k]
        # counting sort by step into a scratch region at pos
        fill = count.copy()
        n_in = count[n_steps]
        tmp_u = np.empty(n_in, dtype=np.int32)
        for e in range(a, b):
            st = int(np.floor(times[e] * scale / dt + 1e-9))
            if 0 <= st < n_steps and 0 <= units[e] < n_units:
                tmp_u[fill[st]] = units[e]
                fill[st] += 1
        for st in range(n_steps):
            lo = count[st]
            hi = count[st + 1]
            if hi == lo:
                continue
            # insertion sort in place: a step holds few spikes, and np.sort would allocate
            for q in range(lo + 1, hi):
                x = tmp_u[q]
                r = q - 1
                while r >= lo and tmp_u[r] > x:
                    tmp_u[r + 1] = tmp_u[r]
                    r -= 1
                tmp_u[r + 1] = x
            for q in range(lo, hi):
                u = tmp_u[q]
                if last[u] != s * n_steps + st:
                    last[u] = s * n_steps + st
                    out_s[pos] = st
                    out_u[pos] = u
                    pos += 1
        out_off[s + 1] = pos
    return pos, out_off


@njit(cache=True)
def _place_sample(steps, units, a, b, keep, koff, shift, delay_copies, delay_steps, n_steps, n_units, slot, out,
                  base, unit_delay):
    """Walk one sample's kept events, their channels moved by ``shift`` (those leaving
    [0, n_units) dropped), and their delayed copies (copies in order, so within a step units stay
    sorted by (copy, unit) = by unit id), dropping those past the trial end. With an empty
    ``out`` it counts events per step into slot[step + 1]; otherwise it writes unit ids to
    out[base + slot[step]] and advances slot[step]."""
    count_only = out.shape[0] == 0
    for c in range(delay_copies):
        for e in range(a, b):
            if keep[koff + e - a] == 0:
                continue
            u = np.int64(units[e]) + shift
            if u < 0 or u >= n_units:
                continue
            uc = u + c * n_units
            st = np.int64(steps[e]) + c * delay_steps
            if unit_delay.shape[0] > 0:
                st += unit_delay[uc]
            if st < n_steps:
                if count_only:
                    slot[st + 1] += 1
                else:
                    out[base + slot[st]] = uc
                    slot[st] += 1


@njit(cache=True)
def gather_batch(steps, units, offsets, idx, keep, shifts, n_steps, delay_copies, delay_steps, n_units, unit_delay):
    """CSR batch of samples idx from pre-binned events. keep: per gathered event (after the
    per-sample order), 1 to keep (input dropout); shifts: per batch sample, added to its channel
    ids (the shift augmentation, applied here so no shifted copy of the dataset is made);
    delay_copies > 1 adds delayed copies; unit_delay (empty, or one per network input) delays
    each input's spikes by that many steps (learned input delays)."""
    B = idx.shape[0]
    ptr = np.zeros((B, n_steps + 1), dtype=np.int64)
    total = 0
    for j in range(B):
        s = idx[j]
        total += (offsets[s + 1] - offsets[s]) * delay_copies
    out = np.empty(total, dtype=np.int32)
    no_out = np.empty(0, dtype=np.int32)
    cnt = np.zeros(n_steps + 1, dtype=np.int64)
    pos = 0
    kpos = 0
    for j in range(B):
        s = idx[j]
        a, b = offsets[s], offsets[s + 1]
        cnt[:] = 0
        _place_sample(steps, units, a, b, keep, kpos, shifts[j], delay_copies, delay_steps, n_steps, n_units, cnt, no_out, 0,
                      unit_delay)
        for k in range(n_steps):
            cnt[k + 1] += cnt[k]
        ptr[j, 0] = pos
        for k in range(n_steps):
            ptr[j, k + 1] = pos + cnt[k + 1]
        _place_sample(steps, units, a, b, keep, kpos, shifts[j], delay_copies, delay_steps, n_steps, n_units, cnt.copy(), out,
                      pos, unit_delay)
        pos += cnt[n_steps]
        kpos += b - a
    return ptr, out[:pos].copy()


@njit(cache=True)
def shift_units(times, units, offsets, shifts, n_units):
    """Per-sample channel shift in one pass: unit + shifts[sample], dropping spikes that leave
    [0, n_units). Returns (times, units, offsets) of the kept spikes, order preserved."""
    S = offsets.shape[0] - 1
    out_t = np.empty(times.shape[0], dtype=times.dtype)
    out_u = np.empty(units.shape[0], dtype=np.int32)
    out_off = np.zeros(S + 1, dtype=np.int64)
    pos = 0
    for s in range(S):
        sh = shifts[s]
        for e in range(offsets[s], offsets[s + 1]):
            u = units[e] + sh
            if 0 <= u < n_units:
                out_t[pos] = times[e]
                out_u[pos] = u
                pos += 1
        out_off[s + 1] = pos
    return out_t[:pos].copy(), out_u[:pos].copy(), out_off
