"""Every CUDA kernel compiles for a real GPU (typing, lowering and NVVM to PTX).

The simulator runs the kernels as Python, so it accepts code that the CUDA
target refuses (untyped builtins, unsupported calls, dtype mix-ups). This test
compiles each kernel to PTX for compute capability 8.0 in a subprocess with
the simulator off; it needs libNVVM (the CUDA toolkit), not a GPU, and is
skipped where libNVVM is missing. Compiling a device function normally asks
the driver for the current device's compute capability; with no driver the
subprocess answers for it.
"""
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent('''
    import numba.cuda.dispatcher as dispatcher
    from numba import cuda, types

    class Device:
        compute_capability = (8, 0)

    dispatcher.get_current_device = lambda: Device()
    try:
        cuda.compile_ptx(lambda a: None, (types.float64[:],), cc=(8, 0))
    except Exception as exc:
        if "NVVM" in str(exc) or "nvvm" in str(exc):
            print("NO_NVVM", exc)
            raise SystemExit(0)
        raise
    from hmnumba.kernels import compress_cuda, products_cuda, trees_cuda

    f8, i8, i1 = types.float64, types.int64, types.int8
    sigs = [
        (trees_cuda, "_tree_level", (f8[:, :], i8[:], i8[:], i8[:], i8[:], i8, i8, f8[:, :],
                                     f8[:, :], i8[:])),
        (compress_cuda, "_aca_blocks", (i8, f8, f8[:, :], f8[:, :]) + (i8[:],) * 4 + (f8, f8[:])
         + (i8[:],) * 5 + (f8[:],) * 4 + (i1[:], i1[:], i8[:], f8[:], f8[:], i8[:])),
    ]
    for dt in (types.float64, types.float32):
        blocks = (dt[:],) + (i8[:],) * 7
        sigs += [
            (products_cuda, "_phase_one", blocks + (i8[:], dt[:, :], f8[:, :], types.boolean)),
            (products_cuda, "_phase_two", blocks + (i8[:],) * 3
             + (dt[:, :], f8[:, :], f8[:, :], types.boolean)),
            (products_cuda, "_gather_rows", (f8[:, :], i8[:], dt[:, :])),
            (products_cuda, "_scatter_rows", (f8[:, :], i8[:], dt[:, :])),
        ]
    for module, name, sig in sigs:
        ptx, _ = cuda.compile_ptx(getattr(module, name).py_func, sig, cc=(8, 0))
        assert ".entry" in ptx, name
        print("compiled", name)
''')


def test_every_kernel_compiles_to_ptx():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0")
    run = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                         text=True, timeout=600)
    if run.stdout.startswith("NO_NVVM"):
        pytest.skip("libNVVM (CUDA toolkit) not found: " + run.stdout.strip())
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("compiled") == 10
