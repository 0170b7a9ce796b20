"""The extension exports its module init function only: the calls between its
fn_* functions are bound inside it, so a library loaded with RTLD_GLOBAL that
exports a function of the same name cannot take their place."""

import ctypes
import sys

import pytest

from fastnorm import _ext


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ELF symbol visibility")
def test_only_the_module_init_is_exported():
    lib = ctypes.CDLL(_ext.__file__)
    assert hasattr(lib, "PyInit__ext")
    for name in ("fn_copy", "fn_seg_norm_f32", "fn_col_bwd_f64", "fn_scratch_alloc", "fn_table_generic"):
        assert not hasattr(lib, name), f"{name} is exported"
