"""A run stopped anywhere and resumed computes exactly the losses of a run never interrupted.

Dropout (drop path), Mixup/CutMix and EMA are all on, so their RNG and state must come back too.
Three ways of stopping: `stop_after_steps` (in process), SIGTERM (saves and exits) and SIGKILL
(no warning: the rerun starts from the last periodic checkpoint and recomputes the steps after it).
"""

from __future__ import annotations

import signal
import subprocess
import time

import numpy as np
import pytest
from flax import traverse_util

from tests.train.helpers import FULL_STATE, checkpoint_steps, cli_command, losses, subprocess_env, train
from vim_jax.convert import restore_params
from vim_jax.train.metrics import read_metrics

STEPS = 8
RUN = ("--config.checkpoint_every_steps=3", "--config.log_every_steps=1", "--config.eval_every_steps=1000",
       *FULL_STATE)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run."""
    workdir = tmp_path_factory.mktemp("reference")
    assert train(workdir, *RUN, f"--config.num_train_steps={STEPS}") == 0
    assert sorted(losses(workdir)) == list(range(1, STEPS + 1))
    return workdir


def assert_same_run(workdir, reference):
    assert losses(workdir) == losses(reference)  # exactly: same programs, same data, same RNG
    final = read_metrics(workdir)[-1]
    assert final == read_metrics(reference)[-1] and "eval/ema_top1" in final
    for item in ("params", "ema_params"):
        ours = traverse_util.flatten_dict(restore_params(workdir / "checkpoints", item=item))
        theirs = traverse_util.flatten_dict(restore_params(reference / "checkpoints", item=item))
        assert ours.keys() == theirs.keys()
        for key in ours:
            np.testing.assert_array_equal(ours[key], theirs[key], err_msg=str(key))


def test_stop_after_steps_then_rerun_matches_the_uninterrupted_run(reference, tmp_path):
    assert train(tmp_path, *RUN, f"--config.num_train_steps={STEPS}", "--config.stop_after_steps=5") == 0
    assert checkpoint_steps(tmp_path) == [3, 5]
    assert sorted(losses(tmp_path)) == [1, 2, 3, 4, 5]
    assert train(tmp_path, *RUN, f"--config.num_train_steps={STEPS}") == 0
    assert checkpoint_steps(tmp_path) == [6, 8]  # keep_checkpoints=2
    assert_same_run(tmp_path, reference)


def _start_and_wait_for_step(workdir, step: int, cache_dir: str, checkpointed: bool = False) -> subprocess.Popen:
    """A long run in a child process, returned once it has logged `step` (and, if `checkpointed`,
    finished writing a checkpoint)."""
    command = cli_command("train", workdir, *RUN, "--config.num_train_steps=100000")
    child = subprocess.Popen(command, env=subprocess_env(cache_dir), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
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


@pytest.mark.slow
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


@pytest.mark.slow
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
