"""Turn pytest-benchmark JSON from the fastnorm bench suite into a report.

Usage::

    pytest bench/ --benchmark-only --benchmark-json=bench/results/core.json
    python bench/report.py bench/results/core.json -o bench/results/report.md \\
        --plot bench/results/throughput.png

Several JSON files may be given (e.g. a normal run, a ``--scaling`` run and a
``--contended`` run); their benchmarks are merged.  The report has

* a table of allocating calls (``y = f(x)``): fastnorm's median time, GB/s,
  % of a copy into a freshly allocated array, each peer's median and
  fastnorm's speed-up over it;
* a table of ``out=`` calls: fastnorm against the OpenMP copy of the same
  bytes into a preallocated array (the bandwidth limit) and the peers that
  accept an output buffer;
* thread scaling (1 -> N threads) and, when a contended run is included, the
  contended time against fastnorm's own uncontended 1-thread time;
* a list of the performance targets of the performance issue that the
  measurements miss;
* optionally a PNG (matplotlib) of throughput against input size for each
  op, with the copy-bandwidth line.

GB/s counts the bytes an ideal kernel moves: read ``x`` once and write ``y``
once (``2 * x.nbytes``), whatever the implementation really does.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import defaultdict

__all__ = ["load", "build_report", "plot_throughput", "main"]

#: Peers in column order, with labels.
PEER_LABELS = {"numpy": "NumPy (1 thr)", "numba": "numba", "torch": "PyTorch",
               "ort": "ONNX Runtime"}


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------

def load(paths):
    """Load benchmark records from pytest-benchmark JSON files.

    Parameters
    ----------
    paths : list of str
        JSON files written with ``--benchmark-json``.

    Returns
    -------
    records : list of dict
        One dict per benchmark with the ``extra_info`` fields (case, op,
        impl, variant, threads, contended, nbytes, io_bytes, ...) plus
        ``median`` (seconds) and ``rounds``.
    machines : list of dict
        Each file's ``machine_info`` with its ``datetime``.
    """
    records, machines = [], []
    for path in paths:
        with open(path) as fh:
            data = json.load(fh)
        mi = dict(data.get("machine_info", {}))
        mi["datetime"] = data.get("datetime", "")
        mi["file"] = path
        machines.append(mi)
        for b in data.get("benchmarks", []):
            info = dict(b.get("extra_info") or {})
            if "impl" not in info:
                continue  # not from this suite
            info["median"] = b["stats"]["median"]
            info["iqr"] = b["stats"].get("iqr", float("nan"))
            info["mean"] = b["stats"].get("mean", float("nan"))
            info["rounds"] = b["stats"].get("rounds", 0)
            info["contended"] = bool(info.get("contended", False))
            records.append(info)
    return records, machines


class _Index:
    """Lookup of medians by (case, impl, variant, threads, contended)."""

    def __init__(self, records):
        self.t = {}
        self.cases = {}
        for r in records:
            key = (r["case"], r["impl"], r["variant"], int(r["threads"]), r["contended"])
            # several files may hold the same benchmark: keep the fastest median
            if key not in self.t or r["median"] < self.t[key]["median"]:
                self.t[key] = r
            self.cases.setdefault(r["case"], r)

    def get(self, case, impl, variant, threads, contended=False, stat="median"):
        r = self.t.get((case, impl, variant, threads, contended))
        if r is None and impl == "numpy":  # NumPy runs once, single-threaded
            cands = [v for k, v in self.t.items()
                     if k[0] == case and k[1] == "numpy" and k[2] == variant
                     and k[4] == contended]
            r = min(cands, key=lambda v: v["threads"]) if cands else None
        return None if r is None else r.get(stat)

    def copy(self, case, variant, contended=False):
        """Fastest copy of the case's bytes over every measured thread count."""
        ts = [v["median"] for k, v in self.t.items()
              if k[0] == case and k[1] == "copy" and k[2] == variant and k[4] == contended]
        if not ts:
            return None
        info = self.cases[case]  # the copy moves x's bytes; scale to the op's bytes
        return min(ts) * info["io_bytes"] / (2.0 * info["nbytes"])

    def copy_share(self, case, variant, threads, contended=False):
        """fastnorm's speed as a fraction of the copy's, from the rounds in which the
        two were timed in turn (conftest.interleaved_ratio), scaled to the op's
        bytes; None for results without them."""
        r = self.t.get((case, "fastnorm", variant, threads, contended))
        if r is None or r.get("copy_ratio") is None:
            return None
        return r["copy_ratio"] * r["io_bytes"] / (2.0 * r["nbytes"])

    def peer_speedup(self, case, variants, threads, contended=False):
        """fastnorm's lowest speed-up over a peer in the rounds in which the two
        were timed in turn (conftest's ``fastnorm_speedup``), over the peers and
        variants given; None when no record has one."""
        rs = [r["fastnorm_speedup"] for k, r in self.t.items()
              if k[0] == case and k[2] in variants and k[3] == threads and k[4] == contended
              and r.get("fastnorm_speedup") is not None]
        return min(rs) if rs else None

    def case_order(self, suite=None):
        seen = []
        for (case, *_), r in self.t.items():
            if case not in seen and (suite is None or r.get("suite", "core") == suite):
                seen.append(case)
        return seen


# --------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------

def fmt_time(s):
    """Format seconds with a unit (µs, ms, s); '—' for None."""
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "—"
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1.0:
        return f"{s * 1e3:.3g} ms" if s < 0.1 else f"{s * 1e3:.0f} ms"
    return f"{s:.2f} s"


def fmt_bytes(n):
    """Format a byte count with a binary unit."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024.0
    return str(n)


def _thr(n):
    return f"{n} thread" + ("s" if n != 1 else "")


def _gbs(io_bytes, t):
    return None if not t else io_bytes / t / 1e9


def _pct(a, b):
    """a / b as a percentage string ('—' if missing)."""
    return "—" if not a or not b else f"{100.0 * a / b:.0f}%"


def _share(f):
    """A fraction as a percentage string ('—' if missing)."""
    return "—" if f is None else f"{100.0 * f:.0f}%"


def _x(peer_t, fn_t):
    return "" if not peer_t or not fn_t else f" (×{peer_t / fn_t:.2f})"


def _speedup(r):
    return "—" if r is None else f"×{r:.2f}"


def _table(header, rows):
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def _peers_present(idx):
    present = {k[1] for k in idx.t}
    return [p for p in PEER_LABELS if p in present]


def _alloc_table(idx, cases, threads, contended=False):
    peers = _peers_present(idx)
    header = (["case", "x size", "fastnorm", "GB/s", "% of fresh copy", "same rounds"]
              + [PEER_LABELS[p] for p in peers]
              + ["fastest peer", "fastest peer % of fresh copy", "vs peers, same rounds"])
    rows = []
    for case in cases:
        info = idx.cases[case]
        fn = idx.get(case, "fastnorm", "alloc", threads, contended)
        cp = idx.copy(case, "alloc", contended)
        ptimes = {p: idx.get(case, p, "alloc", threads, contended) for p in peers}
        cells = [fmt_time(ptimes[p]) + _x(ptimes[p], fn) for p in peers]
        best = min((t for t in ptimes.values() if t), default=None)
        g = _gbs(info["io_bytes"], fn)
        rows.append([case, fmt_bytes(info["nbytes"]), fmt_time(fn),
                     "—" if g is None else f"{g:.1f}", _pct(cp, fn),
                     _share(idx.copy_share(case, "alloc", threads, contended))] + cells
                    + [fmt_time(best) + _x(best, fn), _pct(cp, best),
                       _speedup(idx.peer_speedup(case, ("alloc",), threads, contended))])
    return _table(header, rows)


def _out_table(idx, cases, threads, contended=False):
    outpeers = [p for p in _peers_present(idx)
                if any(k[1] == p and k[2] == "out" for k in idx.t)]
    header = (["case", "fastnorm out=", "GB/s", "% of copy", "same rounds"]
              + [PEER_LABELS[p] + " out" for p in outpeers]
              + ["copy (preallocated)", "copy GB/s", "copy into fresh array",
                 "vs peers' out, same rounds"])
    rows = []
    for case in cases:
        info = idx.cases[case]
        fn = idx.get(case, "fastnorm", "out", threads, contended)
        cp = idx.copy(case, "out", contended)
        cpa = idx.copy(case, "alloc", contended)
        g = _gbs(info["io_bytes"], fn)
        gc = _gbs(info["io_bytes"], cp)
        cells = []
        for p in outpeers:
            t = idx.get(case, p, "out", threads, contended)
            cells.append(fmt_time(t) + _x(t, fn))
        rows.append([case, fmt_time(fn), "—" if g is None else f"{g:.1f}", _pct(cp, fn),
                     _share(idx.copy_share(case, "out", threads, contended))]
                    + cells + [fmt_time(cp), "—" if gc is None else f"{gc:.1f}",
                               fmt_time(cpa),
                               _speedup(idx.peer_speedup(case, ("out",), threads, contended))])
    return _table(header, rows)


def _threads_table(idx, cases, threads_list, has_contended):
    tmax = max(threads_list)
    header = ["case"] + [f"fastnorm {t} thr" for t in threads_list]
    if len(threads_list) > 1:
        header.append(f"speed-up 1→{tmax}")
    if has_contended:
        header += [f"contended, {tmax} thr", "contended mean", "contended / own 1-thr",
                   "≤ 2×?", "fastest peer contended (median / mean)"]
    rows = []
    for case in cases:
        ts = [idx.get(case, "fastnorm", "out", t) or idx.get(case, "fastnorm", "alloc", t)
              for t in threads_list]
        row = [case] + [fmt_time(t) for t in ts]
        if len(threads_list) > 1:
            row.append(f"{ts[0] / ts[-1]:.2f}×" if ts[0] and ts[-1] else "—")
        if has_contended:
            c = (idx.get(case, "fastnorm", "out", tmax, True)
                 or idx.get(case, "fastnorm", "alloc", tmax, True))
            base = idx.get(case, "fastnorm", "out", 1) or idx.get(case, "fastnorm", "alloc", 1)
            ratio = c / base if c and base else None
            cm = (idx.get(case, "fastnorm", "out", tmax, True, "mean")
                  or idx.get(case, "fastnorm", "alloc", tmax, True, "mean"))
            peer_c = [(idx.get(case, p, "alloc", tmax, True),
                       idx.get(case, p, "alloc", tmax, True, "mean"))
                      for p in _peers_present(idx) if p != "numpy"]
            peer_c = [pc for pc in peer_c if pc[0]]
            best_c = min(peer_c, default=(None, None))
            row += [fmt_time(c), fmt_time(cm), "—" if ratio is None else f"{ratio:.2f}×",
                    "—" if ratio is None else ("yes" if ratio <= 2.0 else "**no**"),
                    f"{fmt_time(best_c[0])} / {fmt_time(best_c[1])}"]
        rows.append(row)
    return _table(header, rows)


_READ_ONCE = ("layer_norm", "rms_norm", "batch_norm_eval", "group_norm", "instance_norm",
              "add_layer_norm")
_SMALL_LIMIT = {(32, 512): 4e-6, (512, 64): 8e-6}


def _target_misses(idx, cases, threads):
    """The issue's targets that the measurements miss (one line each)."""
    misses = []
    for case in cases:
        info = idx.cases[case]
        for variant in ("alloc", "out"):
            fn = idx.get(case, "fastnorm", variant, threads)
            if fn is None:
                continue
            # per peer, the same-rounds speed-up where the run has one, else the
            # ratio of the medians
            ratios = []
            for p in _peers_present(idx):
                r = idx.t.get((case, p, variant, threads, False))
                if r is None:
                    continue
                if r.get("fastnorm_speedup") is not None:
                    ratios.append((r["fastnorm_speedup"], p, "in the same rounds"))
                else:
                    ratios.append((r["median"] / fn, p, "by medians"))
            if ratios and min(ratios)[0] < 1.25:
                worst, p, how = min(ratios)
                misses.append(f"{case} ({variant}): {worst:.2f}× {PEER_LABELS[p]} {how} "
                              f"(target ≥ 1.25×)")
        # against the copy: the share from interleaved rounds where the run has it
        # (see copy_share), else the ratio of the two medians
        fn_out = idx.get(case, "fastnorm", "out", threads)
        cp = idx.copy(case, "out")
        share = idx.copy_share(case, "out", threads)
        if share is None and fn_out and cp:
            share = cp / fn_out
        if share is not None and info["nbytes"] >= 16 * 2**20:
            need = 0.90 if info["op"] in _READ_ONCE else 0.75
            if share < need:
                misses.append(f"{case} (out=): {100 * share:.0f}% of copy bandwidth "
                              f"(target ≥ {100 * need:.0f}%)")
        fn_a = idx.get(case, "fastnorm", "alloc", threads)
        cpa = idx.copy(case, "alloc")
        share = idx.copy_share(case, "alloc", threads)
        if share is None and fn_a and cpa:
            share = cpa / fn_a
        if share is not None and share < 0.90:
            misses.append(f"{case} (alloc): {100 * share:.0f}% of a copy into a fresh "
                          f"array (target ≥ 90%)")
        lim = _SMALL_LIMIT.get(tuple(info.get("shape", ())))
        if lim and info.get("dtype") == "float32" and info["op"] == "layer_norm" and fn_a:
            if fn_a > lim:
                misses.append(f"{case} (alloc): {fmt_time(fn_a)} per call "
                              f"(target ≤ {fmt_time(lim)})")
        c = idx.get(case, "fastnorm", "out", threads, True)
        base = idx.get(case, "fastnorm", "out", 1)
        if c and base and c / base > 2.0:
            misses.append(f"{case} contended: {c / base:.2f}× its uncontended 1-thread time "
                          f"(target ≤ 2×)")
    return misses


def _machine_lines(machines):
    lines = []
    for mi in machines:
        cpu = mi.get("cpu", {})
        brand = cpu.get("brand_raw", "") if isinstance(cpu, dict) else ""
        la0, la1 = mi.get("loadavg_start"), mi.get("loadavg_end")
        load = ""
        if la0:
            load = f", load avg {la0[0]:.2f} at start"
            if la1:
                load += f" / {la1[0]:.2f} at end"
        lines.append(f"- `{os.path.basename(mi.get('file', ''))}`: {mi.get('datetime', '')}, "
                     f"{mi.get('node', '')}, {brand}, {mi.get('usable_cores', '?')} usable "
                     f"cores{load}{', **contended**' if mi.get('contended') else ''}")
        peers = mi.get("peers")
        if peers:
            lines.append("  - peers: " + ", ".join(f"{k} {v}" for k, v in peers.items()))
    return "\n".join(lines)


def build_report(records, machines, threads=None):
    """Build the markdown report.

    Parameters
    ----------
    records, machines
        Output of :func:`load`.
    threads : int, optional
        Thread count of the main tables (default: the largest measured).

    Returns
    -------
    str
        Markdown text.
    """
    idx = _Index(records)
    all_threads = sorted({int(r["threads"]) for r in records if r["impl"] != "numpy"})
    if not all_threads:
        return "No fastnorm bench records found.\n"
    threads = threads or max(all_threads)
    has_cont = any(r["contended"] for r in records)
    core = idx.case_order("core")
    scaling = idx.case_order("scaling")
    parts = ["# fastnorm benchmark report", "", _machine_lines(machines), "",
             "Medians. GB/s counts one read of x and one write of y. "
             "(×k) after a peer's time is fastnorm's speed-up over it. "
             "Copy references are the fastest copy of the same bytes at any measured "
             "thread count (for ops moving more than x and y, e.g. add+norm or a "
             "backward, the copy time is scaled to the op's bytes). \"same rounds\": "
             "fastnorm against the copy at its thread count, the two timed in "
             "alternating rounds right after fastnorm's benchmark (median of the "
             "rounds' ratios); the machine's bandwidth drifts between benchmarks, so "
             "this is the steadier figure, and the one the targets are checked "
             "against. \"vs peers, same rounds\": fastnorm's lowest speed-up over the "
             "peers whose median is within 2.5× of fastnorm's (NumPy and ONNX Runtime "
             "aside, see bench/README.md), each timed "
             "with fastnorm in alternating rounds right after the peer's benchmark; the "
             "targets take it where present (— : no peer that close).", ""]
    for title, cases in (("Core cases", core), ("Size scaling (LayerNorm)", scaling)):
        if not cases:
            continue
        parts += [f"## {title}: allocating output, {_thr(threads)}", "",
                  _alloc_table(idx, cases, threads), "",
                  f"## {title}: `out=`, {_thr(threads)}", "",
                  _out_table(idx, cases, threads), ""]
    if core:
        parts += ["## Threads" + (" and contention" if has_cont else ""), "",
                  _threads_table(idx, core, all_threads, has_cont), ""]
        if has_cont:
            parts += [f"## Core cases under contention (one core busy), {_thr(threads)}",
                      "", _alloc_table(idx, core, threads, contended=True), ""]
        misses = _target_misses(idx, core, threads)
        parts += ["## Targets missed", ""]
        parts += [f"- {m}" for m in misses] if misses else ["None."]
        parts.append("")
    return "\n".join(parts)


# --------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------

def plot_throughput(records, path, threads=None):
    """Plot GB/s against input size per op, with the copy-bandwidth line.

    Parameters
    ----------
    records : list of dict
        Output of :func:`load`.
    path : str
        PNG file to write.
    threads : int, optional
        Thread count to plot (default: the largest measured).

    Returns
    -------
    bool
        False when matplotlib is not installed (nothing written).
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    recs = [r for r in records if not r["contended"] and r.get("dtype") == "float32"]
    if not recs:
        return False
    threads = threads or max(int(r["threads"]) for r in recs)
    series = defaultdict(lambda: defaultdict(dict))  # op -> label -> nbytes -> GB/s
    for r in recs:
        t = int(r["threads"])
        if t != threads and not (r["impl"] == "numpy" and t == 1):
            continue
        label = r["impl"] if r["impl"] in ("numpy", "torch") else f"{r['impl']} {r['variant']}"
        if r["impl"] == "copy":
            label = "copy (preallocated)" if r["variant"] == "out" else "copy into fresh array"
        key = r["op"] if r["op"] != "batch_norm_train" else f"batch_norm_train {r['layout']}"
        g = r["io_bytes"] / r["median"] / 1e9
        cur = series[key][label].get(r["nbytes"])
        series[key][label][r["nbytes"]] = g if cur is None else max(cur, g)
    ops = sorted(series)
    ncol = min(3, len(ops))
    nrow = math.ceil(len(ops) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.5 * ncol, 4.2 * nrow), squeeze=False)
    for ax, op in zip(axes.flat, ops):
        for label, pts in sorted(series[op].items()):
            xs = sorted(pts)
            ys = [pts[x] for x in xs]
            style = dict(marker="o", ms=3)
            if label.startswith("copy"):
                style.update(color="black", ls="--" if "fresh" in label else "-", lw=2)
            elif label.startswith("fastnorm"):
                style.update(lw=2.2)
            ax.plot(xs, ys, label=label, **style)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("size of x (bytes)")
        ax.set_ylabel("GB/s (read x + write y)")
        ax.set_title(f"{op}, float32, {threads} threads")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(ops):]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None):
    """Command-line entry point.

    Parameters
    ----------
    argv : list of str, optional

    Returns
    -------
    int
        Exit status.
    """
    ap = argparse.ArgumentParser(description="fastnorm benchmark report")
    ap.add_argument("json", nargs="+", help="pytest-benchmark JSON file(s)")
    ap.add_argument("-o", "--output", help="write the markdown here (default: stdout)")
    ap.add_argument("--plot", help="write a throughput-vs-size PNG here (needs matplotlib)")
    ap.add_argument("--threads", type=int, default=None,
                    help="thread count of the main tables (default: the largest)")
    args = ap.parse_args(argv)
    records, machines = load(args.json)
    text = build_report(records, machines, args.threads)
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text)
        print(f"wrote {args.output}")
    else:
        print(text)
    if args.plot:
        if plot_throughput(records, args.plot, args.threads):
            print(f"wrote {args.plot}")
        else:
            print("matplotlib not installed (or no float32 data): no plot", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
