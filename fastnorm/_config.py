"""Thread count and build/runtime configuration."""
import os
import sys

from . import _ext
from ._validate import check_int

_default_threads = None   # set by set_num_threads; None: follow OpenMP


def set_num_threads(n):
    """Set the default number of threads of every fastnorm call in this process.

    Parameters
    ----------
    n : int
        Threads per call, >= 1. A call's ``num_threads=`` still overrides it.

    Raises
    ------
    ValueError
        If `n` < 1.
    TypeError
        If `n` is not an integer.

    Examples
    --------
    >>> import fastnorm
    >>> fastnorm.set_num_threads(1)
    >>> fastnorm.get_num_threads()
    1
    """
    global _default_threads
    n = _check_threads(n, "set_num_threads", "n")
    _default_threads = n
    # OpenMP caps a team at the calling thread's nthreads-var (OMP_NUM_THREADS);
    # raise it here so an explicit request above that cap is honoured.
    _ext.omp_set_num_threads(n)


def get_num_threads():
    """Default number of threads of a fastnorm call made from this thread.

    The value set by :func:`set_num_threads`, else OpenMP's maximum for the
    calling thread: the usable cores, ``OMP_NUM_THREADS`` when set, or what
    ``threadpoolctl.threadpool_limits`` imposes. Inside a
    ``threadpool_limits(1)`` block the result is 1 either way.

    Returns
    -------
    int

    Examples
    --------
    >>> import fastnorm
    >>> fastnorm.get_num_threads() >= 1
    True
    """
    omp = _ext.omp_max_threads()
    if _default_threads is None:
        return omp
    return min(_default_threads, omp) if omp == 1 else _default_threads


def _check_threads(n, func, name="num_threads"):
    return check_int(n, func, name, 1)


def resolve_threads(num_threads, func):
    if num_threads is None:
        return get_num_threads()
    return _check_threads(num_threads, func)


def set_buffer_cache(max_bytes):
    """Set how much freed output memory fastnorm keeps for reuse.

    Outputs of 4 MiB and more that fastnorm allocates (``y = layer_norm(x)``) come
    from a cache of recycled blocks: when such an array is garbage-collected its
    memory is kept, up to `max_bytes` in all, and handed to the next output of a
    similar size. Reused memory is already mapped, so the call skips the page
    faults that make a fresh large array slow to write (2-3x for 100 MB). The
    arrays are ordinary NumPy arrays. The default limit is 1 GiB, or the
    ``FASTNORM_BUFFER_CACHE_MB`` environment variable read at import; 0 turns the
    cache off and frees what it holds.

    Parameters
    ----------
    max_bytes : int
        Most bytes held by freed blocks, >= 0. Blocks beyond it are freed now.

    Returns
    -------
    int
        The previous limit.

    Raises
    ------
    TypeError
        If `max_bytes` is not an integer.
    ValueError
        If `max_bytes` < 0.

    Examples
    --------
    >>> import fastnorm
    >>> old = fastnorm.set_buffer_cache(0)        # no recycling
    >>> _ = fastnorm.set_buffer_cache(old)         # back to the previous limit
    """
    max_bytes = check_int(max_bytes, "set_buffer_cache", "max_bytes", 0)
    return _ext.buffer_cache_limit(min(max_bytes, 2**62))[0]


def _apply_buffer_cache_env():
    text = os.environ.get("FASTNORM_BUFFER_CACHE_MB", "").strip()
    if not text:
        return
    try:
        mb = float(text)
        if not mb >= 0:
            raise ValueError
    except ValueError:
        import warnings
        warnings.warn(f"FASTNORM_BUFFER_CACHE_MB ignored: expected a number of MiB >= 0, got {text!r}",
                      RuntimeWarning, stacklevel=3)
        return
    _ext.buffer_cache_limit(int(min(mb, 2.0**40) * 2**20))


def show_config(file=None):
    """Print fastnorm's version, OpenMP and thread settings, and SIMD paths.

    Parameters
    ----------
    file : file-like, optional
        Where to print; default ``sys.stdout``.

    Examples
    --------
    >>> import fastnorm
    >>> fastnorm.show_config()  # doctest: +SKIP
    fastnorm 0.1.0 ...
    """
    from . import __version__
    import numpy as np
    out = file or sys.stdout
    lines = [
        f"fastnorm {__version__}  (numpy {np.__version__}, python {sys.version.split()[0]})",
        f"  openmp:          {'enabled' if _ext.openmp_enabled() else 'DISABLED (serial build)'}",
        f"  threads:         {get_num_threads()} per call (usable cores {_ext.usable_cores()}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})",
        f"  simd compiled:   {', '.join(_ext.compiled_isas())}",
        f"  simd supported:  {', '.join(_ext.supported_isas())}",
        f"  simd active:     {_ext.isa_name()}"
        + (f"  (FASTNORM_FORCE_ISA={os.environ['FASTNORM_FORCE_ISA']})" if os.environ.get("FASTNORM_FORCE_ISA") else ""),
        f"  L2 cache:        {_ext.l2_cache_bytes() // 1024} KiB per core (walks sized by it)",
        "  output cache:    {:.0f} MiB held, limit {:.0f} MiB".format(
            *(v / 2**20 for v in reversed(_ext.buffer_cache_limit()))),
    ]
    print("\n".join(lines), file=out)


def _apply_forced_isa():
    name = os.environ.get("FASTNORM_FORCE_ISA", "").strip().lower()
    if not name:
        return
    try:
        _ext.select_isa(name)
    except ValueError as e:
        import warnings
        warnings.warn(f"FASTNORM_FORCE_ISA ignored: {e}", RuntimeWarning, stacklevel=3)
