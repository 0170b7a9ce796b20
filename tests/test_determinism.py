"""Bitwise determinism: every op gives the same bits for num_threads = 1, 2, 3, 4, 7
and across repeated calls, on inputs large enough (> 65536 elements) to take the
parallel paths: few huge rows, many short rows, NCHW with C = 1..3, channels-last,
channels-first layer_norm (axis=1), and GroupNorm / InstanceNorm in both memory orders.
"""

import numpy as np
import pytest

import fastnorm

THREADS = [1, 2, 3, 4, 7]

# name -> (shape, kind, axis / channel_axis)
CASES = {
    "few-huge-rows": ((3, 90001), "rows", -1),
    "many-rows": ((2500, 67), "rows", -1),
    "short-rows": ((1301, 51), "rows", -1),  # row groups not a multiple of the vector width
    "rows-3d-two-axes": ((6, 130, 151), "rows", (1, 2)),
    "nchw-c1": ((16, 1, 70, 70), "channels", 1),
    "nchw-c2": ((16, 2, 50, 50), "channels", 1),
    "nchw-c3": ((9, 3, 57, 61), "channels", 1),
    "channels-last": ((40001, 3), "channels", -1),
    "nchw-small-planes": ((64, 40, 7, 7), "channels", 1),     # walked row by row of units
    "nhwc": ((8, 45, 45, 5), "channels", -1),
    "channels-first-ln": ((8, 3, 60, 61), "rows", 1),
    "channels-first-ln-c64": ((4, 64, 20, 21), "rows", 1),
    "rows-16k": ((24, 4096), "rows", -1),   # float32 rows pipelined unit to unit
    "groups-nchw": ((8, 16, 32, 32), "groups", 1),
    "groups-nhwc": ((8, 32, 32, 16), "groups", -1),
    "instances-16k": ((4, 8, 64, 64), "groups", 1),
}


def _run(kind, x, dy, ax, nt):
    """Every op on x with num_threads=nt; returns a list of byte strings."""
    out = []
    if kind == "rows":
        axes = (ax,) if isinstance(ax, int) else ax
        pshape = tuple(x.shape[a] for a in sorted(a % x.ndim for a in axes))
        w = (np.arange(np.prod(pshape)) % 7 * 0.25 + 0.5).astype(x.dtype).reshape(pshape)
        b = (np.arange(np.prod(pshape)) % 5 * 0.1 - 0.2).astype(x.dtype).reshape(pshape)
        y, m, r = fastnorm.layer_norm(x, w, b, axis=ax, return_stats=True, num_threads=nt)
        out += [y, m, r]
        out += list(fastnorm.layer_norm_backward(dy, x, m, r, w, axis=ax, num_threads=nt))
        out += list(fastnorm.layer_norm_backward(dy, x, m, r, None, axis=ax, num_threads=nt)[:1])
        y, r = fastnorm.rms_norm(x, w, axis=ax, return_stats=True, num_threads=nt)
        out += [y, r]
        out += list(fastnorm.rms_norm_backward(dy, x, r, w, axis=ax, num_threads=nt))
        out += list(fastnorm.moments(x, axis=ax, num_threads=nt))
        out += list(fastnorm.moments(x, axis=None, num_threads=nt))
    elif kind == "groups":
        C = x.shape[ax]
        w = np.linspace(0.5, 2, C).astype(x.dtype)
        b = np.linspace(-1, 1, C).astype(x.dtype)
        for G in (4, C):
            y, m, r = fastnorm.group_norm(x, G, w, b, channel_axis=ax, return_stats=True, num_threads=nt)
            out += [y, m, r]
            out += list(fastnorm.group_norm_backward(dy, x, G, m, r, w, channel_axis=ax, num_threads=nt))
        y, m, r = fastnorm.instance_norm(x, w, b, channel_axis=ax, return_stats=True, num_threads=nt)
        out += [y, m, r]
        out += list(fastnorm.instance_norm_backward(dy, x, m, r, w, channel_axis=ax, num_threads=nt))
    else:
        C = x.shape[ax]
        w = np.linspace(0.5, 2, C).astype(x.dtype)
        b = np.linspace(-1, 1, C).astype(x.dtype)
        rm, rv = np.full(C, 0.3, x.dtype), np.full(C, 1.7, x.dtype)
        y, m, s = fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv, training=True,
                                      channel_axis=ax, return_stats=True, num_threads=nt)
        out += [y, m, s, rm, rv]
        out += list(fastnorm.batch_norm_backward(dy, x, m, s, w, channel_axis=ax,
                                                 training=True, num_threads=nt))
        out.append(fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv, training=False,
                                       channel_axis=ax, num_threads=nt))
        out += list(fastnorm.batch_norm_backward(dy, x, rm, 1 / np.sqrt(rv + 1e-5), w,
                                                 channel_axis=ax, training=False,
                                                 num_threads=nt))
        red = tuple(i for i in range(x.ndim) if i != ax % x.ndim)
        out += list(fastnorm.moments(x, axis=red, num_threads=nt))
    return [np.asarray(a).tobytes() for a in out]


def _data(shape, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 2.5 + 10).astype(dtype)   # |mean| >> std
    dy = rng.standard_normal(shape).astype(dtype)
    return x, dy


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", list(CASES))
def test_bitwise_identical_for_any_thread_count(case, dtype):
    shape, kind, ax = CASES[case]
    assert np.prod(shape) > 65536
    x, dy = _data(shape, dtype)
    ref = _run(kind, x, dy, ax, 1)
    for nt in THREADS[1:]:
        got = _run(kind, x, dy, ax, nt)
        diff = [i for i, (a, b) in enumerate(zip(ref, got)) if a != b]
        assert not diff, f"{case}: results {diff} differ between num_threads=1 and {nt}"


@pytest.mark.parametrize("case", ["few-huge-rows", "nchw-c3", "channels-last", "channels-first-ln"])
def test_repeated_calls_identical(case):
    shape, kind, ax = CASES[case]
    x, dy = _data(shape, np.float32, seed=1)
    ref = _run(kind, x, dy, ax, 2)
    for _ in range(3):
        assert _run(kind, x, dy, ax, 2) == ref
        assert _run(kind, x, dy, ax, None) == ref   # default thread count


@pytest.mark.parametrize("layout", ["F", "strided", "negative"])
def test_noncontiguous_layouts_thread_independent(layout):
    x, dy = _data((300, 400), np.float32, seed=2)
    if layout == "F":
        x, dy = np.asfortranarray(x), np.asfortranarray(dy)
    elif layout == "strided":
        x, dy = np.repeat(x, 2, axis=1)[:, ::2], np.repeat(dy, 2, axis=1)[:, ::2]
    else:
        x, dy = x[::-1], dy[::-1]
    for kind, ax in [("rows", -1), ("rows", 0), ("channels", -1), ("channels", 0)]:
        ref = _run(kind, x, dy, ax, 1)
        for nt in (2, 3, 7):
            assert _run(kind, x, dy, ax, nt) == ref, (layout, kind, ax, nt)


def test_layers_thread_independent():
    x, dy = _data((32, 3, 40, 40), np.float32, seed=3)
    res = []
    old_default, old_omp = fastnorm._config._default_threads, fastnorm._ext.omp_max_threads()
    for nt in (1, 3):
        fastnorm.set_num_threads(nt)
        try:
            bn = fastnorm.BatchNorm(3)
            ln = fastnorm.LayerNorm(40)
            rms = fastnorm.RMSNorm((40, 40))
            r = [bn(x), bn.backward(dy), bn.weight_grad, bn.bias_grad, bn.running_mean,
                 bn.running_var, ln(x), ln.backward(dy), ln.weight_grad, rms(x), rms.backward(dy),
                 rms.weight_grad]
            res.append([a.tobytes() for a in r])
        finally:
            fastnorm._config._default_threads = old_default
            fastnorm._ext.omp_set_num_threads(old_omp)
    assert res[0] == res[1]


def _out_at(shape, dtype, offset):
    """A C-contiguous array whose data starts `offset` elements past a 64-byte boundary."""
    size = int(np.prod(shape))
    buf = np.empty(size + 64, dtype=dtype)
    start = (-buf.ctypes.data % 64) // buf.itemsize + offset
    return buf[start:start + size].reshape(shape)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,channel_axis", [((40, 777), None), ((6, 8, 7, 7), 1), ((4, 6, 33, 33), 1),
                                                 ((30, 7, 7, 64), -1), ((500, 68), -1)], ids=str)
def test_bits_independent_of_out_alignment(shape, channel_axis, dtype):
    # outputs are written from their first vector boundary on, so the partial
    # vectors at the two ends move with the alignment of out: they must be
    # computed exactly as the full ones
    x, dy = _data(shape, dtype, seed=4)
    outs = [_out_at(shape, dtype, k) for k in range(4)]
    if channel_axis is None:
        w = np.linspace(0.5, 2, shape[-1]).astype(dtype)
        _, m, r = fastnorm.layer_norm(x, w, w, return_stats=True)
        calls = [lambda out: fastnorm.layer_norm(x, w, w, out=out),
                 lambda out: fastnorm.rms_norm(x, w, out=out),
                 lambda out: fastnorm.layer_norm_backward(dy, x, m, r, w, out=out)[0]]
    else:
        C = shape[channel_axis]
        w = np.linspace(0.5, 2, C).astype(dtype)
        ca = dict(channel_axis=channel_axis)
        calls = [lambda out: fastnorm.batch_norm(x, w, w, training=True, out=out, **ca),
                 lambda out: fastnorm.batch_norm(x, w, w, running_mean=w, running_var=w, training=False, out=out, **ca),
                 lambda out: fastnorm.group_norm(x, 2, w, w, out=out, **ca)]
        if x.ndim > 2:
            calls.append(lambda out: fastnorm.instance_norm(x, w, w, out=out, **ca))
    for call in calls:
        ref = call(None).tobytes()
        for out in outs:
            assert call(out).tobytes() == ref


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,channel_axis", [((40, 777), None), ((300, 68), None), ((64, 300), None),
                                                 ((6, 8, 9, 9), 1), ((4, 6, 33, 33), 1), ((500, 68), -1)],
                         ids=str)
def test_bits_independent_of_input_alignment(shape, channel_axis, dtype):
    # rows that do not start on a vector boundary are read from aligned loads and
    # shifted into place: the sums must be those of the plain loads
    x, _ = _data(shape, dtype, seed=8)
    w = np.linspace(0.5, 2, shape[-1] if channel_axis is None else shape[channel_axis]).astype(dtype)
    if channel_axis is None:
        calls = [lambda x: fastnorm.layer_norm(x, w, w), lambda x: fastnorm.rms_norm(x, w),
                 lambda x: fastnorm.layer_norm(x, return_stats=True)[1]]
    else:
        ca = dict(channel_axis=channel_axis)
        calls = [lambda x: fastnorm.batch_norm(x, w, w, training=True, **ca),
                 lambda x: fastnorm.group_norm(x, 2, w, w, **ca)]
        if x.ndim > 2:
            calls.append(lambda x: fastnorm.instance_norm(x, w, w, **ca))
    for call in calls:
        ref = call(x).tobytes()
        for k in range(1, 64 // x.itemsize):
            xk = _out_at(shape, dtype, k)
            xk[...] = x
            assert call(xk).tobytes() == ref, k


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("D", [68, 256, 257, 777])
def test_rows_written_end_to_end_match_row_by_row(D, dtype):
    # rows whose outputs lie end to end are written as one run, the vector that
    # spans two rows joined from both; rows of a padded out are written one by one
    x, _ = _data((300, D), dtype, seed=9)
    w = np.linspace(0.5, 2, D).astype(dtype)
    padded = np.empty((300, D + 3), dtype)[:, :D]
    ref = fastnorm.layer_norm(x, w, w, out=padded).tobytes()
    ref_rms = fastnorm.rms_norm(x, w, out=padded).tobytes()
    for k in range(64 // x.itemsize):
        out = _out_at(x.shape, dtype, k)
        assert fastnorm.layer_norm(x, w, w, out=out).tobytes() == ref, k
        assert fastnorm.rms_norm(x, w, out=out).tobytes() == ref_rms, k


# inputs of this many bytes and more walk rows of 1 KiB to a block with each row's
# statistics taken inside the previous row's normalize loop (FN_PIPED_MIN_BYTES)
PIPED_BYTES = 12 * 2**20


# rows of up to 1 KiB (D = 128 float64, 256 float32) are summed LANES at a time
# in an unrolled stretch, longer ones in a loop (FN_FOLD_UNROLL_BYTES); the
# piped walk of a large batch reduces them either way
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("D", [128, 256, 777, 1024])
def test_row_results_do_not_depend_on_the_batch(D, dtype):
    # a large batch takes each row's statistics inside the loop that normalizes
    # the row before (the first row of a thread's share: on its own); a few rows
    # are walked in groups. Either way a row's values are those of the row
    # normalized alone, for inputs at any offset from a vector boundary and rows
    # read through a padded view
    rows = PIPED_BYTES // (D * np.dtype(dtype).itemsize) + 3
    x, _ = _data((rows, D), dtype, seed=10)
    w = np.linspace(0.5, 2, D).astype(dtype)
    padded = np.empty((rows, D + 5), dtype)
    padded[:, :D] = x
    shifted = _out_at((rows, D), dtype, 3)
    shifted[...] = x
    picks = (0, 1, 2, rows // 2, rows - 1)
    for call in (lambda x: fastnorm.layer_norm(x, w, w), lambda x: fastnorm.rms_norm(x, w),
                 lambda x: fastnorm.layer_norm(x)):
        y = call(x).tobytes()
        assert call(padded[:, :D]).tobytes() == y
        assert call(shifted).tobytes() == y
        ref = call(x)
        for i in picks:
            assert call(x[i:i + 1]).tobytes() == ref[i:i + 1].tobytes(), i
        assert call(x[1:40]).tobytes() == ref[1:40].tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("D", [64, 777])
def test_layer_norm_backward_rows_do_not_depend_on_the_batch(D, dtype):
    # in a large batch each row's sums are taken inside the dx loop of the row
    # before; a row's dx must be that of the row alone
    x, dy = _data((300, D), dtype, seed=11)
    w = np.linspace(0.5, 2, D).astype(dtype)
    _, m, r = fastnorm.layer_norm(x, w, w, return_stats=True)
    dx = fastnorm.layer_norm_backward(dy, x, m, r, w)[0]
    for i in (0, 1, 63, 64, 150, 299):
        one = fastnorm.layer_norm_backward(dy[i:i + 1], x[i:i + 1], m[i:i + 1], r[i:i + 1], w)[0]
        assert one.tobytes() == dx[i:i + 1].tobytes(), i


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(6, 40, 7, 7), (3, 24, 14, 14), (5, 33, 4, 4), (4, 20, 3, 3),
                                   (64, 48, 7, 7)], ids=str)
def test_batch_norm_planes_written_end_to_end_match_channel_by_channel(shape, dtype):
    # the planes of neighbouring channels of a sample lie end to end and are
    # written as one run, the vector that spans two planes joined from both; a
    # channel normalized alone is written plane by plane
    x, _ = _data(shape, dtype, seed=10)
    C = shape[1]
    w = np.linspace(0.5, 2, C).astype(dtype)
    b = np.linspace(-1, 1, C).astype(dtype)
    rm, rv = np.linspace(-0.2, 0.2, C).astype(dtype), np.linspace(0.5, 1.5, C).astype(dtype)
    alone = np.empty_like(x)
    alone_eval = np.empty_like(x)
    for c in range(C):
        sl = x[:, c:c + 1]
        alone[:, c:c + 1] = fastnorm.batch_norm(sl, w[c:c + 1], b[c:c + 1], training=True)
        alone_eval[:, c:c + 1] = fastnorm.batch_norm(sl, w[c:c + 1], b[c:c + 1], running_mean=rm[c:c + 1],
                                                     running_var=rv[c:c + 1], training=False)
    for k in range(0, 64 // x.itemsize, 3):
        for nt in (1, 2):
            out = _out_at(shape, dtype, k)
            np.testing.assert_array_equal(fastnorm.batch_norm(x, w, b, training=True, out=out, num_threads=nt),
                                          alone)
            out = _out_at(shape, dtype, k)
            np.testing.assert_array_equal(fastnorm.batch_norm(x, w, b, running_mean=rm, running_var=rv,
                                                              training=False, out=out, num_threads=nt),
                                          alone_eval)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,G", [((6, 16, 7, 7), 4), ((3, 32, 5, 5), 8), ((64, 12, 3, 3), 3)], ids=str)
def test_group_norm_short_planes_match_group_by_group(shape, G, dtype):
    # groups of short planes are walked row by row of units, each plane's scale
    # and shift formed from its unit's coefficients; a group normalized alone
    # (one unit per sample) goes plane by plane through norm_range
    x, _ = _data(shape, dtype, seed=11)
    C = shape[1]
    Cg = C // G
    w = np.linspace(0.5, 2, C).astype(dtype)
    b = np.linspace(-1, 1, C).astype(dtype)
    w[1] = 0.0   # a zero scale, and one that overflows float32 with rstd
    if dtype == np.float32:
        w[2] = 3e38
    full = fastnorm.group_norm(x, G, w, b)
    for g in range(G):
        sl = slice(g * Cg, (g + 1) * Cg)
        alone = fastnorm.group_norm(np.ascontiguousarray(x[:, sl]), 1, w[sl], b[sl])
        np.testing.assert_array_equal(full[:, sl], alone)
