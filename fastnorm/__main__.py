"""``python -m fastnorm``: self-check every public op, then a short benchmark table.

Exit status 1 when any operation fails its self-check (the table is still
printed unless ``--no-bench``).  Options::

    python -m fastnorm                 # self-check + benchmark table (~15 s)
    python -m fastnorm --check-only    # self-check only
    python -m fastnorm --bench-only    # table only
    python -m fastnorm --threads 1     # table with 1 thread
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv=None):
    """Run the self-check and the benchmark table.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 when every checked operation passed, 1 otherwise.

    Examples
    --------
    >>> from fastnorm.__main__ import main
    >>> main(["--check-only"])  # doctest: +SKIP
    0
    """
    ap = argparse.ArgumentParser(prog="python -m fastnorm", description=__doc__.splitlines()[0])
    ap.add_argument("--check-only", action="store_true", help="skip the benchmark table")
    ap.add_argument("--bench-only", action="store_true", help="skip the self-check")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for the benchmark table (default: fastnorm's default)")
    ap.add_argument("--budget", type=float, default=0.2,
                    help="seconds of measurement per table entry (default 0.2)")
    ap.add_argument("--no-peers", action="store_true",
                    help="compare with NumPy only, even if PyTorch/ONNX Runtime are installed")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every failed comparison")
    args = ap.parse_args(argv)

    import fastnorm
    t0 = time.perf_counter()
    fastnorm.show_config()
    print()
    ok = True
    if not args.bench_only:
        from ._selfcheck import run_selfcheck
        ok = run_selfcheck(verbose=args.verbose)
    if not args.check_only:
        from ._benchtable import run_benchtable
        run_benchtable(threads=args.threads, budget=args.budget, peers=not args.no_peers)
    print(f"\ntotal {time.perf_counter() - t0:.1f} s", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
