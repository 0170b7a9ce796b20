"""Keep one CPU core busy while benchmarks run (the "contended" mode).

Inference servers share cores.  An OpenMP team whose threads are all needed
at a barrier stalls when the OS deschedules one of them, so a library that is
fast on an idle machine can be milliseconds slow on a busy one.
:class:`BusyLoop` starts a separate process running a tight Python loop
(pinned to one core by default), and stops it again.  The child is bounded:
it exits by itself after ``max_seconds`` or as soon as its parent dies, so a
crashed benchmark never leaves a spinning process behind.

The benchmark suite starts it for the whole session with ``--contended`` (or
``FASTNORM_BENCH_CONTENDED=1``).  It can also be used by hand::

    python bench/contention.py --seconds 60      # busy one core for a minute

Environment
-----------
FASTNORM_BENCH_BUSY_CPU
    Core to pin the busy loop to (default: the last core this process may
    use); ``none`` leaves it unpinned.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

__all__ = ["BusyLoop", "contended_requested", "busy_cpu"]


def contended_requested(config=None):
    """Return True when the contended mode was asked for.

    Parameters
    ----------
    config : pytest.Config, optional
        When given, its ``--contended`` option is honoured as well as the
        ``FASTNORM_BENCH_CONTENDED`` environment variable.

    Returns
    -------
    bool
    """
    env = os.environ.get("FASTNORM_BENCH_CONTENDED", "").strip().lower()
    if env in ("1", "true", "yes", "on"):
        return True
    if config is not None:
        try:
            return bool(config.getoption("--contended"))
        except ValueError:
            return False
    return False


def busy_cpu():
    """Return the core the busy loop is pinned to, or None for unpinned.

    Returns
    -------
    int or None
    """
    env = os.environ.get("FASTNORM_BENCH_BUSY_CPU", "").strip().lower()
    if env in ("none", "no", "-1"):
        return None
    if env:
        return int(env)
    try:
        return max(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return None


def _child(max_seconds, parent, cpu):
    """Body of the busy process: spin until the deadline or the parent's death."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:
            pass
    deadline = time.monotonic() + max_seconds
    x = 0
    while time.monotonic() < deadline:
        for _ in range(200_000):  # ~5-10 ms of pure spinning per check
            x += 1
        if os.getppid() != parent:
            break
    return x


class BusyLoop:
    """A bounded busy-loop process keeping one core busy.

    Parameters
    ----------
    cpu : int or None, optional
        Core to pin the busy process to.  Default: :func:`busy_cpu`.
    max_seconds : float, optional
        The child exits by itself after this long (safety bound).

    Examples
    --------
    >>> with BusyLoop(max_seconds=5) as busy:   # doctest: +SKIP
    ...     run_benchmarks()
    """

    _UNSET = object()

    def __init__(self, cpu=_UNSET, max_seconds=3600.0):
        self.cpu = busy_cpu() if cpu is BusyLoop._UNSET else cpu
        self.max_seconds = float(max_seconds)
        self.proc = None

    @property
    def running(self):
        """bool: whether the busy process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        """Start the busy process (no-op when already running).

        Returns
        -------
        BusyLoop
            ``self``.
        """
        if self.running:
            return self
        cmd = [sys.executable, os.path.abspath(__file__), "--child",
               "--seconds", str(self.max_seconds), "--parent", str(os.getpid())]
        if self.cpu is not None:
            cmd += ["--cpu", str(self.cpu)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        time.sleep(0.2)  # let it get scheduled and pinned
        return self

    def stop(self):
        """Stop the busy process and wait for it.

        Returns
        -------
        None
        """
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv=None):
    """Command line: keep one core busy for ``--seconds`` (bounded).

    Parameters
    ----------
    argv : list of str, optional

    Returns
    -------
    int
        Exit status.
    """
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--cpu", type=int, default=None)
    ap.add_argument("--parent", type=int, default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child(args.seconds, args.parent if args.parent else os.getppid(), args.cpu)
        return 0
    cpu = args.cpu if args.cpu is not None else busy_cpu()
    print(f"busy loop on cpu {cpu} for {args.seconds:g} s (Ctrl-C stops it)")
    try:
        _child(args.seconds, os.getppid(), cpu)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
