"""A short benchmark table for ``python -m fastnorm`` (a few seconds).

fastnorm against the NumPy formula and, when they are importable, PyTorch CPU
and ONNX Runtime (single-node models), on a handful of float32 cases, with
median time, GB/s (one read of x plus one write of y) and fastnorm's
speed-up.  An OpenMP copy of the same bytes (``fastnorm._ext.omp_copy``) is
shown as the bandwidth limit.  Depends on NumPy only; the peers are optional.

The full, reproducible comparison is the pytest-benchmark suite in
``bench/`` of the source tree; this table is a quick look.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

__all__ = ["BENCH_CASES", "time_call", "run_benchtable"]

#: (name, op, shape, layout) of the quick cases; float32.
BENCH_CASES = [
    ("LayerNorm (8192, 768)", "layer_norm", (8192, 768), "rows"),
    ("LayerNorm (32, 512)", "layer_norm", (32, 512), "rows"),
    ("RMSNorm (8192, 1024)", "rms_norm", (8192, 1024), "rows"),
    ("BatchNorm train NCHW (32, 64, 56, 56)", "bn_train", (32, 64, 56, 56), "NCHW"),
    ("BatchNorm eval NHWC (32, 56, 56, 64)", "bn_eval", (32, 56, 56, 64), "NHWC"),
]


def time_call(fn, budget=0.2, min_samples=5, max_samples=200):
    """Median wall time of one call of ``fn``.

    Calls shorter than about 0.5 ms are batched so that the timer's
    resolution does not matter.

    Parameters
    ----------
    fn : callable
        Zero-argument function to time (called once first as a warm-up).
    budget : float, optional
        Seconds to spend measuring (at least ``min_samples`` samples).
    min_samples, max_samples : int, optional
        Bounds on the number of samples.

    Returns
    -------
    float
        Median seconds per call.

    Examples
    --------
    >>> t = time_call(lambda: sum(range(100)), budget=0.01)
    >>> t > 0
    True
    """
    pc = time.perf_counter
    t0 = pc()
    fn()
    first = pc() - t0
    inner = max(1, int(5e-4 / max(first, 1e-7)))
    samples = []
    start = pc()
    while len(samples) < max_samples and (len(samples) < min_samples
                                          or pc() - start < budget):
        t0 = pc()
        for _ in range(inner):
            fn()
        samples.append((pc() - t0) / inner)
    return float(np.median(samples))


# --------------------------------------------------------------------------
# Implementations
# --------------------------------------------------------------------------

def _inputs(op, shape, layout, rng):
    x = (0.5 + 2.0 * rng.standard_normal(shape)).astype(np.float32)
    c = shape[-1] if layout in ("rows", "NHWC") else shape[1]
    p = {"x": x, "w": (1 + 0.1 * rng.standard_normal(c)).astype(np.float32),
         "b": (0.1 * rng.standard_normal(c)).astype(np.float32),
         "rm": (0.1 * rng.standard_normal(c)).astype(np.float32),
         "rv": (1 + rng.random(c)).astype(np.float32),
         "ca": -1 if layout == "NHWC" else 1}
    return p


def _fastnorm(op, p, threads):
    import fastnorm as fn
    x, w, b = p["x"], p["w"], p["b"]
    if op == "layer_norm":
        return lambda: fn.layer_norm(x, w, b, num_threads=threads)
    if op == "rms_norm":
        return lambda: fn.rms_norm(x, w, eps=1e-5, num_threads=threads)
    rm, rv, ca = p["rm"].copy(), p["rv"].copy(), p["ca"]
    training = op == "bn_train"
    return lambda: fn.batch_norm(x, w, b, running_mean=rm, running_var=rv, training=training,
                                 channel_axis=ca, num_threads=threads)


def _numpy(op, p, threads):
    x, w, b, ca = p["x"], p["w"], p["b"], p["ca"]
    eps = np.float32(1e-5)
    if op == "layer_norm":
        return lambda: ((x - x.mean(-1, keepdims=True))
                        / np.sqrt(x.var(-1, keepdims=True) + eps) * w + b)
    if op == "rms_norm":
        return lambda: x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps) * w
    shape = [1] * x.ndim
    shape[ca] = -1
    wb, bb = w.reshape(shape), b.reshape(shape)
    if op == "bn_eval":
        rm, rv = p["rm"].reshape(shape), p["rv"].reshape(shape)
        return lambda: (x - rm) / np.sqrt(rv + eps) * wb + bb
    axes = tuple(a for a in range(x.ndim) if a != ca % x.ndim)
    return lambda: ((x - x.mean(axes, keepdims=True))
                    / np.sqrt(x.var(axes, keepdims=True) + eps) * wb + bb)


def _torch(op, p, threads):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    t = torch.from_numpy
    x, w, b = t(p["x"]), t(p["w"]), t(p["b"])
    if op == "layer_norm":
        shp = (x.shape[-1],)
        return lambda: F.layer_norm(x, shp, w, b, 1e-5)
    if op == "rms_norm":
        if not hasattr(F, "rms_norm"):
            return None
        shp = (x.shape[-1],)
        return lambda: F.rms_norm(x, shp, w, 1e-5)
    if p["ca"] == -1:
        x = x.permute(0, 3, 1, 2)  # channels_last view
    rm, rv = t(p["rm"].copy()), t(p["rv"].copy())
    training = op == "bn_train"
    return lambda: F.batch_norm(x, rm, rv, w, b, training, 0.1, 1e-5)


def _ort(op, p, threads):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    x = p["x"]
    shape = list(x.shape)
    nodes, inits, opset, extra = [], [("W", p["w"])], 17, []
    if op == "layer_norm":
        inits.append(("B", p["b"]))
        nodes.append(helper.make_node("LayerNormalization", ["X", "W", "B"], ["Y"],
                                      axis=-1, epsilon=1e-5))
    elif op == "rms_norm":
        opset = 23
        nodes.append(helper.make_node("RMSNormalization", ["X", "W"], ["Y"],
                                      axis=-1, epsilon=1e-5))
    else:
        inits += [("B", p["b"]), ("M", p["rm"]), ("V", p["rv"])]
        opset = 15
        src, dst = "X", ["Y"]
        if p["ca"] == -1:  # no NHWC BatchNorm in ONNX: transpose around it
            nodes.append(helper.make_node("Transpose", ["X"], ["Xt"], perm=[0, 3, 1, 2]))
            src, dst = "Xt", ["Yt"]
        attrs = {"epsilon": 1e-5}
        if op == "bn_train":
            attrs.update(training_mode=1, momentum=0.9)
            dst = dst + ["RM", "RV"]
            extra = ["RM", "RV"]
        nodes.append(helper.make_node("BatchNormalization", [src, "W", "B", "M", "V"], dst,
                                      **attrs))
        if p["ca"] == -1:
            nodes.append(helper.make_node("Transpose", ["Yt"], ["Y"], perm=[0, 2, 3, 1]))
    outs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, shape)]
    outs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in extra]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "X", TensorProto.FLOAT, shape)], outs,
        [numpy_helper.from_array(a, n) for n, a in inits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=10 if opset < 23 else 11)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    feed = {"X": x}
    return lambda: sess.run(["Y"], feed)[0]


def _copy_ref(op, p, threads):
    from fastnorm import _ext
    x = p["x"]
    dst = np.empty_like(x)
    dst.fill(0)
    return lambda: _ext.omp_copy(x, dst, threads)


_PEERS = [("NumPy (1 thread)", _numpy), ("PyTorch", _torch), ("ONNX Runtime", _ort)]


def _try(maker, op, p, threads):
    try:
        return maker(op, p, threads)
    except Exception:
        return None


def run_benchtable(threads=None, budget=0.2, file=None, peers=True):
    """Print a short table of fastnorm against NumPy (and PyTorch / ONNX Runtime).

    Parameters
    ----------
    threads : int, optional
        Thread count of fastnorm and the threaded peers (default
        :func:`fastnorm.get_num_threads`).
    budget : float, optional
        Seconds of measurement per (case, implementation).
    file : file-like, optional
        Where to print (default ``sys.stdout``).
    peers : bool, optional
        Include PyTorch and ONNX Runtime when importable.

    Returns
    -------
    list of dict
        One row per (case, implementation): ``case``, ``impl``, ``median``
        (seconds), ``gbs`` and ``speedup`` (the implementation's time over
        fastnorm's; None for fastnorm and the copy).

    Examples
    --------
    >>> from fastnorm._benchtable import run_benchtable
    >>> rows = run_benchtable(budget=0.05)  # doctest: +SKIP
    """
    import fastnorm
    out = file or sys.stdout
    threads = threads or fastnorm.get_num_threads()
    rng = np.random.default_rng(0)
    makers = [("fastnorm", _fastnorm)] + [m for m in _PEERS if peers or m[1] is _numpy]
    makers.append(("copy (same bytes)", _copy_ref))
    try:
        load = os.getloadavg()[0]
        load_s = f", load average {load:.2f}"
    except OSError:  # pragma: no cover
        load_s = ""
    print(f"\nbenchmark: float32, {threads} threads (NumPy: 1), median of repeated calls"
          f"{load_s}", file=out)
    print("GB/s counts one read of x and one write of y; speed-up = other's time / "
          "fastnorm's.", file=out)
    header = f"{'case':<40} {'implementation':<18} {'median':>10} {'GB/s':>7} {'speed-up':>10}"
    print(header, file=out)
    print("-" * len(header), file=out)
    rows = []
    for name, op, shape, layout in BENCH_CASES:
        p = _inputs(op, shape, layout, rng)
        io_bytes = 2 * p["x"].nbytes
        t_fn = None
        for i, (label, maker) in enumerate(makers):
            fn = _try(maker, op, p, 1 if maker is _numpy else threads)
            if fn is None:
                continue
            t = time_call(fn, budget=budget)
            if maker is _copy_ref and threads > 1:
                # the limit is the fastest copy: small copies are fastest serial
                t = min(t, time_call(_copy_ref(op, p, 1), budget=budget / 2))
            if maker is _fastnorm:
                t_fn = t
            gbs = io_bytes / t / 1e9
            sp = t / t_fn if (t_fn and maker not in (_fastnorm, _copy_ref)) else None
            rows.append({"case": name, "impl": label, "median": t, "gbs": gbs, "speedup": sp})
            if maker is _copy_ref and t_fn:
                sp_s = f"{100 * t / t_fn:8.0f}%"  # fastnorm as % of copy bandwidth
            else:
                sp_s = f"{sp:9.1f}x" if sp else ""
            print(f"{name if i == 0 else '':<40} {label:<18} {_fmt(t):>10} {gbs:7.1f} {sp_s:>10}",
                  file=out)
        del p
    print("(copy row: its speed-up column is fastnorm's % of copy bandwidth)", file=out)
    return rows


def _fmt(s):
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    if s < 1.0:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"
