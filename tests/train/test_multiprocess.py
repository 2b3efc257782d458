"""Multi-host training for real: two processes (two CPU devices each) joined by
`jax.distributed.initialize` over a local coordinator, each reading its half of every global batch,
stopped part-way, resumed, and computing the losses of one device with the same global batch."""

from __future__ import annotations

import socket
import subprocess

import numpy as np
import pytest

from tests.conftest import FAST_COMPILE_FLAG
from tests.train.helpers import cli_command, losses, subprocess_env, train

RUN = ("--config.num_train_steps=5", "--config.log_every_steps=1", "--config.eval_every_steps=1000",
       "--config.checkpoint_every_steps=1000", "--config.eval_batch_size=400", "--config.max_eval_batches=1",
       "--config.model.drop_path_rate=0.2", "--config.ema_decay=0.9")
PROCESSES = 2
# Two training processes, twice, and a one-device reference: five steps each, so all of them
# compile unoptimised (the children through `FAST_COMPILE_FLAG`), sooner than XLA's optimisations
# would pay back.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("unoptimised_training_steps")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_two_processes(workdir, cache_dir, *overrides: str) -> None:
    """`vim-jax train` as process 0 and 1 of one run; fails with both logs if either fails."""
    coordinator = f"localhost:{free_port()}"
    env = subprocess_env(cache_dir, JAX_PLATFORMS="cpu",
                         XLA_FLAGS=f"{FAST_COMPILE_FLAG} --xla_force_host_platform_device_count=2")
    children = [subprocess.Popen(
        cli_command("train", workdir, *RUN, *overrides, "--config.distributed=True",
                    f"--config.coordinator_address={coordinator}", f"--config.num_processes={PROCESSES}",
                    f"--config.process_id={i}"),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(PROCESSES)]
    logs = [child.communicate(timeout=600)[0] for child in children]
    assert all(child.returncode == 0 for child in children), "\n\n".join(logs)
    assert "on 4 device(s), mesh {'data': 4, 'fsdp': 1}" in logs[0]


def test_two_processes_stopped_and_resumed_match_one_device(tmp_path, compilation_cache):
    run = tmp_path / "two_processes"
    run_two_processes(run, compilation_cache, "--config.stop_after_steps=3")  # saves at step 3 and exits
    assert sorted(losses(run)) == [1, 2, 3]
    run_two_processes(run, compilation_cache)  # resumes at step 3
    assert train(tmp_path / "one_device", *RUN) == 0

    got, expected = losses(run), losses(tmp_path / "one_device")
    assert sorted(got) == sorted(expected) == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([got[s] for s in range(1, 6)], [expected[s] for s in range(1, 6)], rtol=2e-6)
