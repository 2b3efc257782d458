"""`vim_jax.huge_pages`: when `vim-jax` starts itself again with glibc's huge-page tunable."""

import os
import subprocess
import sys

import pytest

from vim_jax import huge_pages
from vim_jax.huge_pages import SWITCH, TUNABLE, environment_with_huge_pages

GLIBC = (2, 36)


def test_tunable_added_where_glibc_and_the_kernel_support_it():
    env = environment_with_huge_pages({"PATH": "/bin"}, "madvise", GLIBC)
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": TUNABLE, SWITCH: "0"}
    assert environment_with_huge_pages({}, "always", (2, 35))["GLIBC_TUNABLES"] == TUNABLE


def test_other_tunables_are_kept():
    env = environment_with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "madvise", GLIBC)
    assert env["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{TUNABLE}"


@pytest.mark.parametrize("environ,mode,glibc", [
    ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, "madvise", GLIBC),  # the user chose
    ({SWITCH: "0"}, "madvise", GLIBC),  # switched off, or already started again
    ({}, "never", GLIBC),  # the kernel gives no huge pages
    ({}, None, GLIBC),  # not Linux
    ({}, "madvise", None),  # musl or another C library
    ({}, "madvise", (2, 34)),  # glibc before the tunable
])
def test_no_relaunch_where_it_would_change_nothing(environ, mode, glibc):
    assert environment_with_huge_pages(environ, mode, glibc) is None


def _clean_env():
    return {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", SWITCH)}


@pytest.mark.skipif(environment_with_huge_pages({}, huge_pages.thp_mode(), huge_pages.glibc_version()) is None,
                    reason="no huge pages for glibc here")
def test_relaunch_runs_the_same_command_line_once_with_the_tunable():
    code = ("import os; from vim_jax import huge_pages; print('start', flush=True); huge_pages.relaunch(); "
            "print(os.environ['GLIBC_TUNABLES'], os.environ['VIM_JAX_HUGE_PAGES'])")
    out = subprocess.run([sys.executable, "-c", code], env=_clean_env(), capture_output=True, text=True, check=True)
    assert out.stdout.split("\n") == ["start", "start", f"{TUNABLE} 0", ""]


def test_vim_jax_program_runs_through_the_relaunch():
    out = subprocess.run([sys.executable, "-m", "vim_jax.cli", "convert", "--help"], env=_clean_env(),
                         capture_output=True, text=True, check=True)
    assert out.stdout.count("usage: vim-jax convert") == 1
