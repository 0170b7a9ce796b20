"""Shared fixtures for the fastnorm test suite.

Fixtures:
- ``rng``: a seeded ``np.random.Generator`` (deterministic per test id).
- ``dtype``: float32 and float64.
- ``layout``: the memory layouts in ``reference.LAYOUTS`` (C, F, strided,
  negative strides, mixed, permuted); build arrays with
  ``reference.make_layout(a, layout)``.
- ``num_threads``: 1 and 2 (pass it as ``num_threads=``).

The oracles and helpers live in ``tests/reference.py`` (``from reference
import ...``); this file puts tests/ on sys.path so that works whatever
pytest's import mode.
"""

import os
import sys
import zlib

import numpy as np
import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from reference import DTYPES, LAYOUTS  # noqa: E402


@pytest.fixture
def rng(request):
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)


@pytest.fixture(params=DTYPES, ids=lambda d: np.dtype(d).name)
def dtype(request):
    return np.dtype(request.param)


@pytest.fixture(params=LAYOUTS)
def layout(request):
    return request.param


@pytest.fixture(params=[1, 2], ids=lambda n: f"threads{n}")
def num_threads(request):
    return request.param


@pytest.fixture(params=["generic", "avx2", "avx512"])
def active_isa(request):
    """Each SIMD path the CPU supports, made active for the test, then restored."""
    from fastnorm import _ext

    if request.param not in _ext.supported_isas():
        pytest.skip(f"{request.param} not supported by this CPU")
    before = _ext.isa_name()
    _ext.select_isa(request.param)
    yield request.param
    _ext.select_isa(before)


def fastnorm_pythonpath():
    """PYTHONPATH entry that makes a subprocess import the same fastnorm."""
    import fastnorm

    return os.path.dirname(os.path.dirname(os.path.abspath(fastnorm.__file__)))


def run_python(code, env_update=None, env_remove=(), timeout=120):
    """Run ``code`` in a fresh interpreter importing the same fastnorm.

    Returns the CompletedProcess; raises AssertionError with its output when
    the exit status is non-zero.
    """
    import subprocess

    env = dict(os.environ)
    for k in env_remove:
        env.pop(k, None)
    env.update(env_update or {})
    env["PYTHONPATH"] = os.pathsep.join(
        [fastnorm_pythonpath(), _HERE] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                       text=True, timeout=timeout, cwd=_HERE)
    assert p.returncode == 0, f"subprocess failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p


@pytest.fixture
def subprocess_python():
    return run_python
