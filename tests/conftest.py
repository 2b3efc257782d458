"""Suite-wide settings and fixtures: faster-compiling random bits, a session compilation cache,
and each test module's compiled programs dropped when the module is done.

Random bits: jax's default "partitionable" threefry compiles to programs that XLA's CPU compiler
takes about three times longer to build than the classic threefry; the suite initialises many
small models (each initialiser is a compile of dozens of random draws), so it uses the classic
one. Both give well-distributed bits that do not depend on how an array is sharded; only the
values drawn for a given seed differ, and no test depends on those. Set through the environment
before jax is imported, so that the subprocesses the tests start draw the same bits as the
tests themselves.

Compilation cache: many tests compile the same program again (the same tiny model or scan in
another test or module, after the module's caches are cleared), so the session keeps XLA's
persistent compilation cache in a temporary directory; the subprocesses share it through
`tests.train.helpers.subprocess_env`.

Releasing compiled programs: the suite runs in one process, and JAX keeps every function it
compiled (and its traces) for the life of the process; across the whole suite that is gigabytes of
CPU executables no later module calls again. Later modules compile (or load from the cache) what
they need themselves, so results do not change.

Backend optimisation: the suite's programs are mostly small and run a few times, so XLA:CPU's
LLVM optimisation passes cost more compile time than they save (the suite runs with
`--xla_backend_optimization_level=0`). The trainer's step programs are the exception (tens of
steps and evaluations over thousands of images, 2-3x slower unoptimised), so they keep the
default level through their compiler options. XLA reads XLA_FLAGS once, when this process's
backend starts; the variable is restored afterwards, so that child processes (training runs,
experiment scripts) compile as a user's would.
"""

from __future__ import annotations

import ctypes
import gc
import os

os.environ.setdefault("JAX_THREEFRY_PARTITIONABLE", "0")

FAST_COMPILE_FLAG = "--xla_backend_optimization_level=0"
_USER_XLA_FLAGS = os.environ.get("XLA_FLAGS")
if "xla_backend_optimization_level" not in (_USER_XLA_FLAGS or ""):
    os.environ["XLA_FLAGS"] = f"{_USER_XLA_FLAGS or ''} {FAST_COMPILE_FLAG}".strip()

import jax  # noqa: E402
import pytest  # noqa: E402

from vim_jax.train import compiler_options  # noqa: E402

jax.jit(lambda x: x + 1)(0).block_until_ready()  # the CPU backend starts and XLA reads XLA_FLAGS
if _USER_XLA_FLAGS is None:
    os.environ.pop("XLA_FLAGS")
else:
    os.environ["XLA_FLAGS"] = _USER_XLA_FLAGS

jax.config.update("jax_threefry_partitionable", os.environ["JAX_THREEFRY_PARTITIONABLE"] not in ("0", "false", "False"))

try:
    _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim  # glibc keeps freed memory otherwise
except (OSError, AttributeError):  # not glibc
    _MALLOC_TRIM = None

_CACHE_OPTIONS = {"jax_compilation_cache_dir": None, "jax_persistent_cache_min_compile_time_secs": 0.0,
                  "jax_persistent_cache_min_entry_size_bytes": 0}


@pytest.fixture(scope="session", autouse=True)
def optimised_training_steps():
    """The trainer's step programs at XLA's default backend optimisation level, 3 (see above)."""
    previous = compiler_options.CPU_OPTIONS
    compiler_options.CPU_OPTIONS = {**previous, "xla_backend_optimization_level": 3}  # XLA's default
    compiler_options._accepted.cache_clear()
    yield
    compiler_options.CPU_OPTIONS = previous
    compiler_options._accepted.cache_clear()


@pytest.fixture(scope="module")
def unoptimised_training_steps(optimised_training_steps):
    """For a module whose child processes must compute bit for bit what this process computes
    (children get `FAST_COMPILE_FLAG` too), or whose runs are a few steps and evaluation batches:
    the steps here compile like everything else."""
    optimised = compiler_options.CPU_OPTIONS
    compiler_options.CPU_OPTIONS = {k: v for k, v in optimised.items() if k != "xla_backend_optimization_level"}
    compiler_options._accepted.cache_clear()
    jax.clear_caches()
    yield
    compiler_options.CPU_OPTIONS = optimised
    compiler_options._accepted.cache_clear()


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """A persistent XLA cache for the whole pytest run; the previous settings come back afterwards."""
    directory = str(tmp_path_factory.mktemp("xla_cache"))
    previous = {name: getattr(jax.config, name) for name in _CACHE_OPTIONS}
    for name, value in {**_CACHE_OPTIONS, "jax_compilation_cache_dir": directory}.items():
        jax.config.update(name, value)
    yield directory
    for name, value in previous.items():
        jax.config.update(name, value)


# How pytest-xdist (`-n 2 --dist loadgroup`, README's commands) shares the tests between its two
# workers. Each module is one group, which one worker runs whole (its module fixtures and
# compiled programs shared by its tests, as without xdist), except:
# - the modules that import TensorFlow (when their tests run: tests/lazy_import.py) are one group,
#   so that only one process holds TensorFlow (about 450 MB);
# - the interpreted kernels' tests share nothing (each releases its programs), so each is a group
#   of its own and they fill in around the rest.
# Groups are handed out in the order of the items: the longest modules (runs of the trainer,
# child processes) first, the interpreted kernels' single tests last, so that the two workers
# finish close together (xdist's own order, by number of tests, would leave them to the end).
TENSORFLOW_MODULES = ("data/test_imagenet_tfds.py", "data/test_ade20k_tfds.py", "data/test_transforms.py",
                      "train/test_ade20k_fake.py", "train/test_imagenet_fake.py")
PER_TEST_MODULES = ("ops/test_mosaic_scan.py", "ops/test_conv_selective_scan.py", "ops/test_pallas_scan.py")
LONGEST_FIRST = ("experiments/test_segment_vim_vs_deit.py", "train/test_segmentation_training.py",
                 "train/test_multiprocess.py", "test_experiments.py", "train/test_resume_signals.py",
                 "train/test_sharding.py", "models/test_vim.py", "train/test_segmentation_init_from.py",
                 *TENSORFLOW_MODULES, "train/test_resume.py", "train/test_nonfinite.py", "ops/test_triton_scan.py")


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist: keep the order set below
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    tests = os.path.dirname(__file__)

    def module(item):
        return os.path.relpath(str(item.path), tests).replace(os.sep, "/")

    def rank(item):
        name = module(item)
        if name in LONGEST_FIRST:
            return LONGEST_FIRST.index(name)
        return len(LONGEST_FIRST) + (1 if name in PER_TEST_MODULES else 0)

    items.sort(key=rank)  # stable: each module's tests stay together and in their order
    for item in items:
        name = module(item)
        group = "tensorflow" if name in TENSORFLOW_MODULES else item.nodeid if name in PER_TEST_MODULES else name
        item.add_marker(pytest.mark.xdist_group(group))


def _release_memory():
    """JAX's caches cleared, garbage collected, freed heap returned to the OS."""
    jax.clear_caches()
    gc.collect()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


@pytest.fixture(scope="module", autouse=True)
def release_compiled_programs():
    """After each module: its compiled programs released (`_release_memory`)."""
    yield
    _release_memory()


@pytest.fixture
def release_after_each_test():
    """The same after every test, for modules whose tests share few programs and compile large
    ones (the interpreted kernels: their module grew by 2.6 GB otherwise). Recompiling a shared
    program then reads it from the session's compilation cache."""
    yield
    _release_memory()
