"""A run stopped anywhere and resumed computes exactly the losses of a run never interrupted.

Dropout (drop path), Mixup/CutMix and EMA are all on, so their RNG and state must come back too.
Three ways of stopping: `stop_after_steps` (in process, here), SIGTERM (saves and exits) and SIGKILL
(no warning: the rerun starts from the last periodic checkpoint and recomputes the steps after it),
the last two in test_resume_signals.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from flax import traverse_util

from tests.train.helpers import FULL_STATE, checkpoint_steps, losses, train
from vim_jax.convert import restore_params
from vim_jax.train.metrics import read_metrics

# Eight steps and one evaluation batch: unoptimised programs compile sooner than they run slower.
pytestmark = pytest.mark.usefixtures("unoptimised_training_steps")
STEPS = 8
# One evaluation batch: the final evaluation (of the parameters and of the EMA) only has to agree
# between runs, not cover the whole test split.
RUN = ("--config.checkpoint_every_steps=3", "--config.log_every_steps=1", "--config.eval_every_steps=1000",
       "--config.max_eval_batches=1", *FULL_STATE)


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
