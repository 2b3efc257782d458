"""Trainer checkpoints: an orbax ``CheckpointManager`` under ``<workdir>/checkpoints``.

Each saved step holds these items (the layout other tools rely on):

* ``params``: ``nnx.to_pure_dict(nnx.state(model, nnx.Param))``, standard pytree handler;
* ``ema_params``: the same layout, when EMA is on;
* ``opt_state``: the optimizer's state (Adam moments laid out like ``params``);
* ``train_state``: ``{'step', 'rngs'}``: the step and the model's dropout RNG streams;
* ``batch_stats``: the running BatchNorm statistics (``nnx.BatchStat``), for models that have them;
* ``data_iterator``: the Grain input pipeline's position: the global step and what the pipeline must
  match to resume it (JSON; ``vim_jax.data.pipeline.DataIterator.get_state``);
* ``config``: the run's config (JSON), for reading a checkpoint without its command line;
* ``vim_jax``: the model's registry name and full ``VimConfig`` (``vim_jax.convert.orbax_io``),
  so that ``vim_jax.convert.load_into`` can check and rebuild the model from the checkpoint.

Saving is asynchronous: ``save`` returns once the arrays are copied off the devices, and the
files are written in the background. A step's directory gets its final name only when complete,
so a run killed mid-write resumes from the previous checkpoint (the unfinished one is deleted).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import traverse_util

from vim_jax.convert import orbax_io
from vim_jax.train.steps import TrainState


BATCH_STATS_ITEM = "batch_stats"


def _batch_stats_restore(abstract_state: TrainState) -> dict:
    """The restore argument of the ``batch_stats`` item, for a model that has BatchNorm."""
    if not jax.tree.leaves(abstract_state.batch_stats):
        return {}
    return {BATCH_STATS_ITEM: ocp.args.StandardRestore(abstract_state.batch_stats)}


def _by_str_path(tree) -> dict:
    return {tuple(map(str, k)): v for k, v in traverse_util.flatten_dict(tree).items()}


def checkpoint_dir(workdir: str | os.PathLike) -> Path:
    return Path(workdir).absolute() / "checkpoints"


class Checkpointer:
    """Saves and restores :class:`TrainState` plus the data position under ``<workdir>/checkpoints``."""

    def __init__(self, workdir: str | os.PathLike, *, keep: int | None, asynchronous: bool = True,
                 model_metadata: dict | None = None):
        self.directory = checkpoint_dir(workdir)
        self.model_metadata = model_metadata
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True,
                                               enable_async_checkpointing=asynchronous)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, state: TrainState, data_state: dict, config: ml_collections.ConfigDict) -> None:
        step = int(jax.device_get(state.step))
        items = {
            "params": ocp.args.StandardSave(state.params),
            "opt_state": ocp.args.StandardSave(state.opt_state),
            "train_state": ocp.args.StandardSave({"step": state.step, "rngs": state.rngs}),
            "data_iterator": ocp.args.JsonSave(data_state),
            "config": ocp.args.JsonSave(json.loads(config.to_json_best_effort())),
        }
        if state.ema_params is not None:
            items["ema_params"] = ocp.args.StandardSave(state.ema_params)
        if jax.tree.leaves(state.batch_stats):
            items[BATCH_STATS_ITEM] = ocp.args.StandardSave(state.batch_stats)
        if self.model_metadata is not None:
            items[orbax_io.METADATA_ITEM] = ocp.args.JsonSave(self.model_metadata)
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, abstract_state: TrainState, step: int | None = None) -> tuple[TrainState, dict]:
        """The state at ``step`` (default: latest), laid out like ``abstract_state``, and the data
        iterator's state."""
        step = self.latest_step() if step is None else step
        self._check_shapes(step, abstract_state.params)
        items = {
            "params": ocp.args.StandardRestore(abstract_state.params),
            "opt_state": ocp.args.StandardRestore(abstract_state.opt_state),
            "train_state": ocp.args.StandardRestore({"step": abstract_state.step, "rngs": abstract_state.rngs}),
            "data_iterator": ocp.args.JsonRestore(),
        }
        if abstract_state.ema_params is not None:
            items["ema_params"] = ocp.args.StandardRestore(abstract_state.ema_params)
        items.update(_batch_stats_restore(abstract_state))
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        ema = restored["ema_params"] if "ema_params" in items else None
        state = TrainState(step=restored["train_state"]["step"], params=restored["params"],
                           opt_state=restored["opt_state"], ema_params=ema, rngs=restored["train_state"]["rngs"],
                           batch_stats=restored[BATCH_STATS_ITEM] if BATCH_STATS_ITEM in items else {})
        return state, dict(restored["data_iterator"])

    def _check_shapes(self, step: int, abstract_params: dict) -> None:
        """Refuses, with a readable message, a checkpoint of another model (a reused workdir)."""
        # By path of strings: orbax returns the indices of list nodes (nnx.List) as strings.
        saved = _by_str_path(orbax_io.saved_shapes(self.directory / str(step)))
        wanted = _by_str_path(abstract_params)
        differ = [f"{'/'.join(map(str, k))}: checkpoint {saved[k].shape if k in saved else 'missing'}, "
                  f"model {wanted[k].shape if k in wanted else 'missing'}"
                  for k in sorted(set(saved) | set(wanted), key=str)
                  if k not in saved or k not in wanted or tuple(saved[k].shape) != tuple(wanted[k].shape)]
        if differ:
            raise ValueError(f"{self.directory} holds checkpoints of another model; use a new --workdir or "
                             "the config that wrote them. Differences:\n  " + "\n  ".join(differ[:12]))

    def restore_params(self, abstract_state: TrainState, step: int | None = None,
                       ema: bool = False) -> tuple[dict, dict, dict]:
        """Only the parameters (or their EMA), the BatchNorm statistics and the RNG streams: what
        evaluation needs."""
        step = self.latest_step() if step is None else step
        name = "ema_params" if ema else "params"
        items = {name: ocp.args.StandardRestore(abstract_state.params),
                 "train_state": ocp.args.StandardRestore({"step": abstract_state.step, "rngs": abstract_state.rngs}),
                 **_batch_stats_restore(abstract_state)}
        restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        batch_stats = restored[BATCH_STATS_ITEM] if BATCH_STATS_ITEM in items else {}
        return restored[name], batch_stats, restored["train_state"]["rngs"]

    def wait(self) -> None:
        """Blocks until the checkpoints being written in the background are complete."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
