"""Shared helpers of tools/trainer.py and tools/infer.py.

Importing this package, before Paddle is imported, sets MKL_DEBUG_CPU_TYPE=5
on AMD processors: the MKL inside Paddle's CPU wheel otherwise takes its slow
generic code path there (measured on an AMD EPYC: a 4900x576 @ 576x64 matmul
28 ms -> 5 ms, the conv-4 forward about 3x faster). A value the user set is
kept; Intel processors are left alone.
"""
import os
import warnings


def _use_fast_mkl_path_on_amd():
    try:
        with open("/proc/cpuinfo") as f:
            is_amd = "AuthenticAMD" in f.read(4096)
    except OSError:
        return
    if is_amd:
        os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")


_use_fast_mkl_path_on_amd()
warnings.filterwarnings("ignore", message="No ccache found")
