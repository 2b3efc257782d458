"""A run stopped by SIGTERM (it saves and exits) or SIGKILL (no warning: the rerun starts from the
last periodic checkpoint and recomputes the steps after it) and resumed computes exactly the losses
of a run never interrupted (test_resume.py's run, its uninterrupted reference and its checks).

The interrupted runs train in child processes and the reruns and the reference in this one, so
both compile the same programs: the steps here are not given back their optimisations, and the
children get the suite's XLA flag (tests/conftest.py).
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from tests.conftest import FAST_COMPILE_FLAG
from tests.train.helpers import checkpoint_steps, cli_command, losses, subprocess_env, train
from tests.train.test_resume import RUN, STEPS, assert_same_run, reference  # noqa: F401  (a fixture)
from vim_jax.train.metrics import read_metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def same_programs_as_the_children(unoptimised_training_steps):
    """Set before the reference run trains (autouse fixtures come first)."""


def _start_and_wait_for_step(workdir, step: int, cache_dir: str, checkpointed: bool = False) -> subprocess.Popen:
    """A long run in a child process, returned once it has logged `step` (and, if `checkpointed`,
    finished writing a checkpoint)."""
    command = cli_command("train", workdir, *RUN, "--config.num_train_steps=100000")
    child = subprocess.Popen(command, env=subprocess_env(cache_dir, XLA_FLAGS=FAST_COMPILE_FLAG),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (any(row.get("step", 0) >= step for row in read_metrics(workdir))
               and (checkpoint_steps(workdir) or not checkpointed)):
        if child.poll() is not None:
            pytest.fail(f"training exited early:\n{child.stdout.read()}")
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail("training logged nothing in 300 s")
        time.sleep(0.05)
    return child


def test_sigterm_saves_exits_cleanly_and_the_rerun_matches(reference, tmp_path, compilation_cache):
    child = _start_and_wait_for_step(tmp_path, 1, compilation_cache)
    child.send_signal(signal.SIGTERM)
    output, _ = child.communicate(timeout=120)
    assert child.returncode == 0, output
    stopped = checkpoint_steps(tmp_path)[-1]
    assert f"stopped at step {stopped} (SIGTERM)" in output
    assert stopped < STEPS
    assert max(losses(tmp_path)) == stopped  # every finished step was logged before saving
    assert train(tmp_path, *RUN, f"--config.num_train_steps={STEPS}") == 0
    assert_same_run(tmp_path, reference)


def test_killed_run_reruns_from_its_last_checkpoint_and_matches(reference, tmp_path, compilation_cache):
    child = _start_and_wait_for_step(tmp_path, 4, compilation_cache, checkpointed=True)
    child.kill()  # SIGKILL: nothing is saved, rows after the last checkpoint are left behind
    child.communicate(timeout=60)
    assert checkpoint_steps(tmp_path)[0] == 3
    assert max(losses(tmp_path)) > 3
    assert train(tmp_path, *RUN, f"--config.num_train_steps={STEPS}") == 0
    steps = [row["step"] for row in read_metrics(tmp_path) if "train/loss" in row]
    assert steps == list(range(1, STEPS + 1))  # the rerun replaced the interrupted run's extra rows
    assert_same_run(tmp_path, reference)
