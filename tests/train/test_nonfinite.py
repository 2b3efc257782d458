"""A non-finite loss stops the run with a clear message and leaves the checkpoints untouched;
`skip_nonfinite_steps` skips such updates instead."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from tests.train.helpers import FULL_STATE, SMOKE, checkpoint_steps, losses, train
from vim_jax.convert import restore_params
from vim_jax.train import input_pipeline, optim, steps, train_state
from vim_jax.train.config_file import apply_overrides, load_config
from vim_jax.train.mesh import make_mesh

# The options, step count and compiler options of test_resume.py's uninterrupted run, so that the
# good part of the run below is that run's compiled programs.
pytestmark = pytest.mark.usefixtures("unoptimised_training_steps")
STEPS = "--config.num_train_steps=8"
RUN = ("--config.checkpoint_every_steps=2", "--config.log_every_steps=1", "--config.eval_every_steps=1000",
       "--config.max_eval_batches=1", *FULL_STATE)


def _params(workdir):
    return traverse_util.flatten_dict(restore_params(workdir / "checkpoints"))


def test_nonfinite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    assert train(tmp_path, *RUN, STEPS, "--config.stop_after_steps=4") == 0
    good = _params(tmp_path)
    # A NaN learning rate turns the parameters into NaN at step 5, so the loss of step 6 is NaN.
    assert train(tmp_path, *RUN, STEPS, "--config.optim.base_lr=nan") == 1
    error = capsys.readouterr().err
    assert "non-finite loss (nan)" in error and "at step 6" in error
    assert "last good checkpoint (step 4)" in error and "skip_nonfinite_steps" in error
    assert checkpoint_steps(tmp_path) == [2, 4]  # nothing was saved after the good step 4
    for key, value in _params(tmp_path).items():
        np.testing.assert_array_equal(value, good[key])
    assert max(losses(tmp_path)) == 5  # step 5 (finite loss) was logged; step 6 was not


def test_skip_nonfinite_steps_leaves_the_state_unchanged_but_counts_the_step():
    config = load_config(SMOKE)
    # Drop path and EMA as in test_resume.py, whose compiled initialisation this reuses.
    apply_overrides(config, [("mesh.data", "1"), ("global_batch_size", "4"), ("model.drop_path_rate", "0.2"),
                             ("ema_decay", "0.9")])
    setup = train_state.model_setup(config, make_mesh(config.mesh.to_dict()))
    state = train_state.init_state(config, setup)
    batch = {"image": jnp.full((4, 28, 28, 1), jnp.nan), "label": jnp.arange(4, dtype=jnp.int32),
             "mask": jnp.ones((4,), bool)}
    schedule = optim.learning_rate_schedule(config.optim, config.global_batch_size, 100)
    step = jax.jit(functools.partial(
        steps.train_step, graphdef=setup.train_graphdef, tx=setup.tx, schedule=schedule,
        batch_to_targets=input_pipeline.batch_to_targets(config), augment_key=jax.random.key(0),
        ema_decay=config.ema_decay, skip_nonfinite=True))
    new, metrics = step(state, batch)
    assert not metrics["finite"] and not np.isfinite(metrics["loss"])
    assert int(new.step) == int(state.step) + 1
    for old_leaf, new_leaf in zip(jax.tree.leaves((state.params, state.opt_state, state.ema_params)),
                                  jax.tree.leaves((new.params, new.opt_state, new.ema_params)), strict=True):
        np.testing.assert_array_equal(old_leaf, new_leaf)
    counts = [leaf for leaf in jax.tree.leaves(new.rngs) if leaf.dtype == jnp.uint32]
    assert counts and all(int(c) == 0 for c in counts)  # the dropout stream did not advance either
