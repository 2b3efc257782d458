"""The training loop.

``train(config, workdir)`` trains, or resumes if ``workdir`` holds checkpoints: parameters,
optimizer state, EMA, step, dropout RNG and the data position all come back, so a run stopped at
any point (SIGTERM, ``stop_after_steps``, a crash after the last checkpoint) and resumed computes
the same losses as one never interrupted. Rerunning a finished run only evaluates it again.
What is task-specific (loss, evaluation, metrics, plots) comes from ``config.task``'s
:class:`~vim_jax.train.tasks.Task`.

Each step hands the next prefetched, sharded batch to a jitted ``train_step`` whose state is
donated (updated in place), then reads the *previous* step's metrics: reading one step late keeps
the device busy while the host logs, and still stops the run at a non-finite loss before
anything computed after it is saved.
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import flax
import jax
import ml_collections

from vim_jax import ops
from vim_jax.data.pipeline import prefetch_to_device
from vim_jax.train import input_pipeline, optim, steps, tasks, train_state
from vim_jax.train import mesh as mesh_lib
from vim_jax.train.checkpoint import Checkpointer
from vim_jax.train.compiler_options import step_compiler_options
from vim_jax.train.metrics import LogWindow, MetricsWriter
from vim_jax.train.preemption import StopRequest

log = logging.getLogger(__name__)

_MIXUP_SALT = 0x6D6978  # separates the batch-augmentation key from the parameter-init key


class NonFiniteLossError(RuntimeError):
    """The loss or the gradients became NaN/inf; the checkpoints on disk all predate it."""


def evaluate(config: ml_collections.ConfigDict, task: tasks.Task, eval_fn, param_sets: dict[str, dict],
             batch_stats: dict, rngs, batch_sharding) -> dict[str, dict[str, float]]:
    """The task's evaluation (classification: mean loss, top-1, top-5) of each named parameter set
    (e.g. the raw and the EMA weights) over the evaluation split (or its first
    ``config.max_eval_batches`` batches), in one pass: each batch is decoded once and scored by
    every set. ``eval_fn`` is :func:`jit_eval_step`'s."""
    batches = input_pipeline.make_iterator(config, config.dataset.eval_split, train=False)
    if config.max_eval_batches:
        batches.num_steps = min(batches.num_steps, config.max_eval_batches)
    totals = dict.fromkeys(param_sets)
    prefetcher = prefetch_to_device(batches, batch_sharding, config.prefetch_batches)
    start, count = time.perf_counter(), 0
    try:
        for batch in prefetcher:
            sums = eval_fn(param_sets, batch_stats, rngs, batch)
            totals = {name: task.accumulate(totals[name], sums[name]) for name in param_sets}
            count += 1
            if count == 1:  # where a slow evaluation spends its time: compiling, or the batches
                first = time.perf_counter() - start
                log.info("evaluation: first batch in %.1f s (its compilation included)", first)
    finally:
        prefetcher.close()
        batches.close()
    if count > 1:
        log.info("evaluation: %d more batches in %.1f s", count - 1, time.perf_counter() - start - first)
    return {name: task.summarize(sums) for name, sums in jax.device_get(totals).items()}


def total_train_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    """``config.num_train_steps``, or ``config.num_epochs`` of ``steps_per_epoch``."""
    return config.num_train_steps or max(1, round(config.num_epochs * steps_per_epoch))


def jit_train_step(config: ml_collections.ConfigDict, setup: train_state.ModelSetup, mesh, steps_per_epoch: int,
                   task: tasks.Task | None = None):
    """``train_step`` jitted for this config, model and mesh: (state, batch) -> (state, metrics),
    with the state's shardings explicit, its buffers donated and the platform's compiler options.
    ``task`` defaults to the config's."""
    task = task or tasks.make_task(config)
    schedule = optim.learning_rate_schedule(config.optim, config.global_batch_size, steps_per_epoch,
                                            total_train_steps(config, steps_per_epoch))
    return jax.jit(
        functools.partial(steps.train_step, graphdef=setup.train_graphdef, tx=setup.tx, schedule=schedule,
                          batch_to_targets=task.batch_to_targets, loss=task.loss,
                          augment_key=jax.random.fold_in(jax.random.key(config.seed), _MIXUP_SALT),
                          ema_decay=config.ema_decay or None, skip_nonfinite=config.skip_nonfinite_steps),
        in_shardings=(setup.state_shardings, mesh_lib.batch_sharding(mesh)),
        out_shardings=(setup.state_shardings, mesh_lib.replicated(mesh)), donate_argnums=0,
        compiler_options=step_compiler_options(mesh.devices.flat[0].platform))


def jit_eval_step(config: ml_collections.ConfigDict, setup: train_state.ModelSetup, mesh,
                  names: tuple[str, ...] = ("params",), task: tasks.Task | None = None):
    """``eval_step`` jitted for this config's data, model and mesh over parameter sets named
    ``names``: ({name: params}, batch_stats, rngs, batch) -> {name: replicated sums}."""
    shardings = setup.state_shardings
    eval_sums = (task or tasks.make_task(config)).eval_sums

    def eval_sets(param_sets, batch_stats, rngs, batch):
        return {name: steps.eval_step(params, batch_stats, rngs, batch, graphdef=setup.eval_graphdef,
                                      eval_sums=eval_sums)
                for name, params in param_sets.items()}

    return jax.jit(eval_sets, in_shardings=({name: shardings.params for name in names}, shardings.batch_stats,
                                            shardings.rngs, mesh_lib.batch_sharding(mesh)),
                   out_shardings=mesh_lib.replicated(mesh),
                   compiler_options=step_compiler_options(mesh.devices.flat[0].platform))


def train(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, float]:
    """Trains per ``config`` in ``workdir`` (resuming from its checkpoints); returns the last
    evaluation, the task's numbers (classification: {'loss', 'top1', 'top5', 'count'};
    segmentation: {'miou', 'pixel_accuracy', 'mean_accuracy', 'loss', 'count'}), + 'ema_*' with
    ``config.eval_ema``."""
    mesh_lib.initialize_distributed(config)
    workdir = Path(workdir)
    mesh = mesh_lib.make_mesh(config.mesh.to_dict())
    shards = mesh_lib.num_batch_shards(mesh)
    for name in ("global_batch_size", "eval_batch_size"):
        if config[name] % shards:
            raise ValueError(f"config.{name}={config[name]} does not split over the {shards} devices of the mesh")
    batch_sharding = mesh_lib.batch_sharding(mesh)
    is_main = jax.process_index() == 0
    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))

    task = tasks.make_task(config)
    train_data = input_pipeline.make_iterator(config, config.dataset.train_split, train=True)
    steps_per_epoch = train_data.sampler.steps_per_epoch
    total_steps = total_train_steps(config, steps_per_epoch)
    eval_every = config.eval_every_steps or steps_per_epoch

    # Model, optimizer and state: restored if the workdir has checkpoints, else initialised.
    setup = train_state.model_setup(config, mesh)
    if setup.abstract_model.cfg.num_classes != config.dataset.num_classes:
        raise ValueError(f"the model has {setup.abstract_model.cfg.num_classes} classes, the dataset "
                         f"{config.dataset.num_classes}: set --config.model.num_classes")
    checkpointer = Checkpointer(workdir, keep=config.keep_checkpoints, asynchronous=config.async_checkpoints,
                                model_metadata=train_state.model_metadata(config, setup))
    if checkpointer.latest_step() is not None:
        state, data_state = checkpointer.restore(setup.abstract_state)
        train_data.set_state(data_state)
    else:
        if config.init_from_required and not config.init_from:
            raise ValueError("this config fine-tunes a pretrained model: pass --config.init_from=PATH "
                             "(an official .pth or a vim_jax checkpoint)")
        state = train_state.init_state(config, setup)
        if config.init_from:
            state = train_state.load_pretrained(state, config, setup)
    start_step = int(jax.device_get(state.step))
    # `stop_after_steps` ends this invocation early, exactly as a SIGTERM at that step would.
    last_step = min(total_steps, config.stop_after_steps or total_steps)

    train_step = jit_train_step(config, setup, mesh, steps_per_epoch, task)
    with_ema = bool(config.eval_ema) and state.ema_params is not None
    eval_fn = jit_eval_step(config, setup, mesh, ("params", "ema") if with_ema else ("params",), task)

    writer = MetricsWriter(workdir, start_step=start_step, total_steps=total_steps, active=is_main,
                           tensorboard=config.tensorboard, progress_bar=config.progress_bar, plots=task.plots)
    window = LogWindow(config.global_batch_size)
    writer.message(f"{'resuming' if start_step else 'starting'} at step {start_step} of {total_steps} "
                   f"({steps_per_epoch} steps per epoch) on {mesh.devices.size} device(s), mesh {dict(mesh.shape)}")
    # Results must name what produced them: versions, device, and the scan backends tried in order.
    writer.message(f"jax {jax.__version__}, flax {flax.__version__}, {jax.devices()[0].device_kind}; "
                   f"selective-scan backends tried in order: {ops.candidate_backends(config.model.get('scan_backend'))}")

    def run_eval(step: int) -> dict[str, float]:
        param_sets = {"params": state.params, "ema": state.ema_params} if with_ema else {"params": state.params}
        results = evaluate(config, task, eval_fn, param_sets, state.batch_stats, state.rngs, batch_sharding)
        result = results["params"]
        if with_ema:
            result.update({f"ema_{k}": v for k, v in results["ema"].items() if k != "count"})
        writer.write(step, {f"eval/{k}": v for k, v in result.items()})
        writer.message(f"step {step}: eval " + ", ".join(f"{k} {v:.4f}" for k, v in result.items() if k != "count"))
        return result

    def report(step: int, device_metrics: dict) -> None:
        """The host's side of a finished step: non-finite check, progress bar, metrics.jsonl."""
        m = jax.device_get(device_metrics)
        loss, lr = float(m["loss"]), float(m["lr"])
        if not m["finite"]:
            if not config.skip_nonfinite_steps:
                raise NonFiniteLossError(
                    f"non-finite loss ({loss}) or gradient norm ({float(m['grad_norm'])}) at step {step}; stopping. "
                    f"The last good checkpoint (step {checkpointer.latest_step()}) in {checkpointer.directory} "
                    "is kept: rerun to resume from it (with a lower learning rate, say), or set "
                    "--config.skip_nonfinite_steps=True to skip such updates")
            writer.message(f"step {step}: non-finite loss ({loss}); update skipped")
        images_per_second = window.add(step, loss)
        writer.progress(step, loss, lr, images_per_second)
        if step % config.log_every_steps == 0 or step == last_step:
            scalars = {"train/loss": window.flush(step), "train/lr": lr, "train/grad_norm": float(m["grad_norm"]),
                       "train/param_norm": float(m["param_norm"]), "epoch": step / steps_per_epoch,
                       **{f"train/{k}": float(v) for k, v in m["parts"].items()}}  # this step's, not a mean
            if images_per_second is not None:
                scalars["train/images_per_second"] = images_per_second
            writer.write(step, scalars)

    batches = prefetch_to_device(train_data, batch_sharding, config.prefetch_batches)
    last_eval: dict[str, float] = {}
    try:
        with StopRequest() as stop:
            pending = None  # (step, metrics) of the step in flight, read once the next one is queued
            for step in range(start_step + 1, last_step + 1):
                state, metrics = train_step(state, next(batches))
                if pending is not None:
                    report(*pending)
                pending = (step, metrics)

                stopping = step == last_step < total_steps or stop.requested(step, checkpointer.manager)
                evaluating = step % eval_every == 0 or step == total_steps
                saving = step % config.checkpoint_every_steps == 0 or step == total_steps or stopping
                if evaluating or saving:
                    report(*pending)  # nothing non-finite may reach a checkpoint
                    pending = None
                if evaluating:
                    last_eval = run_eval(step)
                if saving:
                    checkpointer.save(state, batches.get_state(), config)
                if evaluating or saving:
                    window.restart_clock(step)
                if stopping:
                    writer.message(f"stopped at step {step} ({stop.signal_name or 'stop_after_steps'}); "
                                   f"checkpoint saved in {checkpointer.directory}: rerun to resume")
                    return last_eval
            if start_step >= total_steps:  # a finished run: evaluate its final state again
                last_eval = run_eval(start_step)
            elif start_step >= last_step:
                writer.message(f"the checkpoint is at step {start_step}, past stop_after_steps={last_step}: "
                               "nothing to do")
    finally:
        batches.close()
        train_data.close()
        checkpointer.wait()
        checkpointer.close()
        writer.close(plot=is_main)
    return last_eval
