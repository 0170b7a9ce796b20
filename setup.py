"""Build fastnorm's extension: Cython wrapper + C kernels, OpenMP when available.

- OpenMP is detected by compiling, linking and running a probe program. When that
  fails the build goes on serially with a loud warning; FASTNORM_DISABLE_OPENMP=1
  skips OpenMP on purpose.
- The kernels (the normalization engine and LRN) are compiled once per SIMD path
  (src_c/norm_{generic,avx2,avx512}.c), each unit with its own -m flags; the code
  that runs at import picks one after checking CPUID and XCR0. Nothing else gets
  ISA flags, so the wheel runs on any x86-64. FASTNORM_DISABLE_SIMD=1 builds the
  generic path only.
"""
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

# -fno-math-errno: nothing reads errno, and without it every sqrt carries a branch
# to the library call that keeps loops over rows from vectorizing.
# -fvisibility=hidden: the module exports PyInit__ext only. Exported, the calls
# between its fn_* functions went through the process's global symbol scope, where
# a library loaded with RTLD_GLOBAL that exports the same name (an fn_copy) takes
# their place.
BASE_CFLAGS = ["-O3", "-fno-strict-aliasing", "-fno-math-errno", "-Wno-unused-function", "-fvisibility=hidden"]
ISA_UNITS = [
    # (source, macro telling fn_runtime.c the table exists, flags)
    ("src_c/norm_avx2.c", "FN_HAVE_AVX2", ["-mavx2", "-mfma"]),
    ("src_c/norm_avx512.c", "FN_HAVE_AVX512",
     ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mfma", "-mprefer-vector-width=512"]),
]

OPENMP_PROBE = textwrap.dedent("""
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d %d\\n", n, omp_get_max_threads());
        return n == omp_get_max_threads() ? 0 : 1;
    }
""")


def _warn(msg):
    bar = "!" * 78
    sys.stderr.write(f"\n{bar}\nfastnorm build: {msg}\n{bar}\n\n")


def _try_build(compiler, source, flags, run):
    """Compile (and link and run, when `run`) a C snippet; True on success."""
    tmp = tempfile.mkdtemp(prefix="fastnorm_probe_")
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(source)
        objs = compiler.compile([src], output_dir=tmp, extra_postargs=flags)
        if not run:
            return True
        exe = os.path.join(tmp, "probe")
        compiler.link_executable(objs, exe, extra_postargs=flags)
        subprocess.run([exe], check=True, capture_output=True, timeout=60)
        return True
    except Exception:  # any failure means "not available": the build must go on
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    def build_extensions(self):
        cc = self.compiler
        omp_flags = []
        if os.environ.get("FASTNORM_DISABLE_OPENMP", "0") not in ("", "0"):
            _warn("OpenMP disabled by FASTNORM_DISABLE_OPENMP: kernels will run on ONE thread.")
        elif _try_build(cc, OPENMP_PROBE, ["-fopenmp"], run=True):
            omp_flags = ["-fopenmp"]
        else:
            _warn("the C compiler cannot build and run an OpenMP program; building a SERIAL "
                  "fastnorm. Install an OpenMP runtime (libgomp / libomp) for multithreading.")
        simd_flags = [] if omp_flags else (["-fopenmp-simd"] if _try_build(
            cc, "int main(void){return 0;}", ["-fopenmp-simd"], run=False) else [])

        x86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")
        want_simd = x86 and os.environ.get("FASTNORM_DISABLE_SIMD", "0") in ("", "0")
        for ext in self.extensions:
            ext.extra_compile_args = BASE_CFLAGS + omp_flags + simd_flags
            ext.extra_link_args = list(omp_flags)
            if not want_simd:
                continue
            for source, macro, flags in ISA_UNITS:
                probe = "int main(void){return 0;}"
                if not _try_build(cc, probe, flags, run=False):
                    _warn(f"compiler rejects {' '.join(flags)}; {source} not built")
                    continue
                objs = cc.compile([source], output_dir=self.build_temp,
                                  include_dirs=["src_c"],
                                  extra_postargs=BASE_CFLAGS + omp_flags + simd_flags + flags)
                ext.extra_objects = list(ext.extra_objects or []) + objs
                ext.define_macros = list(ext.define_macros or []) + [(macro, "1")]
        super().build_extensions()


extensions = [
    Extension(
        "fastnorm._ext",
        sources=["fastnorm/_ext.pyx", "src_c/fn_runtime.c", "src_c/fn_bufcache.c", "src_c/fn_scratch.c", "src_c/fn_transpose.c",
                 "src_c/norm_generic.c"],
        include_dirs=["src_c", np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        depends=[os.path.join("src_c", f) for f in os.listdir("src_c") if f.endswith(".h")]
        + ["fastnorm/_lrn.pxi", "fastnorm/_bufcache.pxi", "fastnorm/_chanfast.pxi", "fastnorm/_bwdfast.pxi",
           "fastnorm/_momentsfast.pxi"],
    )
]

setup(
    ext_modules=cythonize(extensions, language_level=3),
    cmdclass={"build_ext": BuildExt},
)
