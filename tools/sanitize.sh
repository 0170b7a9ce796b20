#!/usr/bin/env bash
# tools/sanitize.sh - build fastnorm with AddressSanitizer + UndefinedBehaviorSanitizer
# and run a subset of the test suite under it.
#
# The sanitized build happens in a throw-away copy of the working tree (tracked and
# untracked-but-not-ignored files) under a temporary directory, so the normal build
# in this checkout is never touched. The copy is deleted afterwards unless KEEP=1.
#
# Usage:  tools/sanitize.sh [extra pytest args]
#   e.g.  tools/sanitize.sh -k layer_norm
#
# Subset run (SANITIZE_TESTS overrides it):
#   tests/test_bad_input.py tests/test_extreme_values.py tests/test_determinism.py
#   tests/test_concurrency.py tests/test_memory.py tests/test_errors.py
#   tests/test_layer_norm.py tests/test_batch_norm.py tests/test_rms_norm.py
#   tests/test_backward.py tests/test_layers.py tests/test_group_norm.py
#   tests/test_instance_norm.py tests/test_buffer_cache.py tests/test_streaming_stores.py
#   tests/test_add_norm.py tests/test_chan_fast.py tests/test_rows_fast.py tests/test_moments.py tests/test_short_segments.py
#   tests/test_wide_columns.py tests/test_narrow_columns.py tests/test_single_value_planes.py
#   tests/test_copy_into.py tests/test_transpose_tiles.py tests/test_backward_strided_x.py
#   tests/test_bwd_scratch_poison.py tests/test_packed_rows.py tests/test_fallback_layouts.py
#   tests/test_transposed_backward.py tests/test_large_short_rows.py tests/test_long_unit_mean.py
#   tests/test_infinite_means.py tests/test_outlier_shift.py tests/test_fixed_rows.py
#   tests/test_short_rows_backward.py tests/test_long_rows_piped.py
#   tests/test_cache_sized_walks.py tests/test_pipelined_units.py tests/test_joined_runs.py
#   tests/test_row_edges.py tests/test_constant_parts.py tests/test_omp_copy.py
# deselecting (SANITIZE_DESELECT overrides it) what is meaningless under ASan:
#   RSS-growth checks (ASan's quarantine and shadow memory change them), and the
#   >2**24-element reductions (slow under ASan).
#
# Settings: ASAN_OPTIONS=detect_leaks=0 (CPython leaks by design at exit),
# halt on the first UBSan report; LD_PRELOAD of libasan (the interpreter itself is
# not instrumented, so the runtime must be loaded first).
# Exit status: pytest's; non-zero on any sanitizer report (they abort the process).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python}"
CC="${CC:-gcc}"
WORK="$(mktemp -d /tmp/fastnorm-sanitize.XXXXXX)"
cleanup() { if [ "${KEEP:-0}" = "1" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT

echo "== copying the working tree to $WORK"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
   | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
   | tar --null -T - -cf -) | (cd "$WORK" && tar -xf -)
# never carry compiled objects of the normal build
find "$WORK" \( -name '*.so' -o -name '*.o' \) -delete
rm -rf "$WORK/build"

SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
# SANITIZE_NO_ALIGNMENT=1 leaves out UBSan's alignment check (misaligned float loads from
# NumPy arrays that are not aligned to their itemsize) to look past that one finding.
if [ "${SANITIZE_NO_ALIGNMENT:-0}" = "1" ]; then SAN="$SAN -fno-sanitize=alignment"; fi
echo "== building with $SAN"
(cd "$WORK" && CC="$CC" CFLAGS="$SAN -g -O1" LDFLAGS="$SAN" \
   "$PY" setup.py -q build_ext --inplace >"$WORK/build.log" 2>&1) || {
   tail -40 "$WORK/build.log"; echo "sanitized build FAILED"; exit 2; }

LIBASAN="$("$CC" -print-file-name=libasan.so)"
LIBUBSAN="$("$CC" -print-file-name=libubsan.so)"
export LD_PRELOAD="$LIBASAN $LIBUBSAN${LD_PRELOAD:+ $LD_PRELOAD}"
# reports go to files too: pytest's output capture would otherwise swallow them
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:detect_stack_use_after_return=0:allocator_may_return_null=1:log_path=$WORK/asan:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$WORK/ubsan:${UBSAN_OPTIONS:-}"
export PYTHONPATH="$WORK${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONMALLOC=malloc      # let ASan see every Python-side allocation too

cd "$WORK"
"$PY" -c "import fastnorm, sys; f = fastnorm.__file__; \
assert f.startswith('$WORK'), f'imported {f}, not the sanitized copy'; \
print('sanitized fastnorm:', fastnorm._ext.__file__)"

TESTS="${SANITIZE_TESTS:-tests/test_bad_input.py tests/test_extreme_values.py tests/test_determinism.py tests/test_concurrency.py tests/test_memory.py tests/test_errors.py tests/test_layer_norm.py tests/test_batch_norm.py tests/test_rms_norm.py tests/test_backward.py tests/test_layers.py tests/test_group_norm.py tests/test_instance_norm.py tests/test_buffer_cache.py tests/test_streaming_stores.py tests/test_add_norm.py tests/test_chan_fast.py tests/test_rows_fast.py tests/test_moments.py tests/test_short_segments.py tests/test_wide_columns.py tests/test_narrow_columns.py tests/test_single_value_planes.py tests/test_copy_into.py tests/test_transpose_tiles.py tests/test_backward_strided_x.py tests/test_bwd_scratch_poison.py tests/test_packed_rows.py tests/test_fallback_layouts.py tests/test_transposed_backward.py tests/test_large_short_rows.py tests/test_long_unit_mean.py tests/test_infinite_means.py tests/test_outlier_shift.py tests/test_fixed_rows.py tests/test_short_rows_backward.py tests/test_long_rows_piped.py tests/test_cache_sized_walks.py tests/test_pipelined_units.py tests/test_joined_runs.py tests/test_row_edges.py tests/test_constant_parts.py tests/test_omp_copy.py}"
DESELECT="${SANITIZE_DESELECT:-not rss_growth and not longer_than_2_24 and not rss_detects}"
existing=""
for t in $TESTS; do [ -e "$t" ] && existing="$existing $t"; done
echo "== pytest under ASan+UBSan:$existing  (-k '$DESELECT')"
set +e
# -s: no output capture, so a report printed just before the process halts is kept
"$PY" -m pytest -v -s -p no:cacheprovider -x $existing -k "$DESELECT" "$@" 2>&1 | tee "$WORK/pytest.log" | grep -vE ' (PASSED|XFAIL|SKIPPED) ' | tail -25
rc=${PIPESTATUS[0]}
set -e
reports="$(ls "$WORK"/asan.* "$WORK"/ubsan.* 2>/dev/null || true)"
if [ -n "$reports" ]; then
    echo "== SANITIZER REPORTS"
    for r in $reports; do echo "--- $r"; head -40 "$r"; done
    [ $rc -eq 0 ] && rc=3
fi
if grep -qE "ERROR: AddressSanitizer|runtime error:" "$WORK/pytest.log"; then
    echo "== SANITIZER REPORT"
    grep -nE -A12 "ERROR: AddressSanitizer|runtime error:" "$WORK/pytest.log" | head -60
    [ $rc -eq 0 ] && rc=3
fi
if [ $rc -ne 0 ]; then
    echo "== last test started:"; grep -E "^tests/" "$WORK/pytest.log" | tail -1 || true
fi
echo "== sanitize.sh: exit $rc"
exit $rc
