"""Host buffers on transparent huge pages, for training on a CPU.

XLA:CPU gives every call of a compiled program a fresh temporary buffer and frees it afterwards
(140 MB per step for README's Fashion-MNIST CPU model). glibc serves blocks that large with
`mmap` and returns them with `munmap` (its mmap threshold cannot exceed 32 MB), so each step
faults in and zeroes ~34,000 fresh 4 KiB pages: 5.8 million page faults in a 150-step run, about
a quarter of its CPU time spent in the kernel. glibc's `glibc.malloc.hugetlb=1` tunable (glibc >= 2.35)
asks for transparent huge pages on those blocks (`madvise(MADV_HUGEPAGE)`), which cut the
faults 25x (0.23 million) and the run's CPU time by 23% (81 -> 62 CPU-seconds; `perf stat` of
back-to-back 150-step runs on a loaded two-core machine, 2026-12-01,
`experiments/results/fashion_mnist_cpu.md`).

A tunable is read when the process starts, so `vim-jax` starts itself again with it set
(`relaunch`); setting ``VIM_JAX_HUGE_PAGES=0`` turns this off. In a notebook or another program,
export ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` before starting Python instead.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb=1"
SWITCH = "VIM_JAX_HUGE_PAGES"  # "0": never relaunch
_THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_mode() -> str | None:
    """The kernel's transparent-huge-page mode ("always", "madvise", "never"), None off Linux."""
    try:
        text = _THP_MODE.read_text()
    except OSError:
        return None
    return next((word[1:-1] for word in text.split() if word.startswith("[")), None)


def glibc_version() -> tuple[int, ...] | None:
    """(major, minor) of the C library when it is glibc, else None."""
    name, version = platform.libc_ver()
    if name != "glibc" or not version:
        return None
    return tuple(int(part) for part in version.split(".")[:2])


def environment_with_huge_pages(environ: Mapping[str, str], mode: str | None,
                                glibc: tuple[int, ...] | None) -> dict[str, str] | None:
    """The environment to start again with, or None where it would change nothing: not glibc
    >= 2.35, huge pages off in the kernel (or not Linux), the tunable already set, or turned off
    by ``VIM_JAX_HUGE_PAGES=0``."""
    tunables = environ.get("GLIBC_TUNABLES", "")
    if (environ.get(SWITCH) == "0" or glibc is None or glibc < (2, 35) or mode in (None, "never")
            or "glibc.malloc.hugetlb=" in tunables):
        return None
    env = dict(environ)
    env["GLIBC_TUNABLES"] = f"{tunables}:{TUNABLE}" if tunables else TUNABLE
    env[SWITCH] = "0"  # the new process must not start itself again, whatever glibc does with the variable
    return env


def relaunch() -> None:
    """Replaces this process by the same command line (`sys.orig_argv`: the interpreter's own
    options, the script or ``-m`` module, the arguments) with huge pages on, where that changes
    something (`environment_with_huge_pages`); otherwise returns and the caller goes on."""
    env = environment_with_huge_pages(os.environ, thp_mode(), glibc_version())
    if env is None or not sys.executable:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
