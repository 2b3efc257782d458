"""Data-parallel and FSDP meshes train exactly like one device, for the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from flax import traverse_util

from tests.train.helpers import REPO, losses, subprocess_env
from tests.train.sharded_runs import SHARDED_MESHES, train_on_mesh
from vim_jax.convert import restore_params
from vim_jax.train.metrics import read_metrics

pytestmark = pytest.mark.slow  # a second process training on two meshes of 8 devices


def test_data_parallel_and_fsdp_meshes_match_one_device(tmp_path, compilation_cache):
    flags = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    child = subprocess.Popen([sys.executable, str(REPO / "tests" / "train" / "sharded_runs.py"), str(tmp_path)],
                             env=subprocess_env(compilation_cache, XLA_FLAGS=flags, JAX_PLATFORMS="cpu"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    # Meanwhile, the one-device reference in this process.
    single = tmp_path / "single"
    train_on_mesh(single, {"data": 1, "fsdp": 1})
    stdout, stderr = child.communicate(timeout=600)
    assert child.returncode == 0, stdout + stderr
    layouts = json.loads(stdout.strip().splitlines()[-1])

    # FSDP really splits the parameters (the mixer width over `fsdp`); pure data parallelism does not.
    assert layouts["data2_fsdp4"]["blocks"]["mixer"]["in_proj"] == [None, None, "fsdp"]
    assert layouts["data2_fsdp4"]["head"]["kernel"] == ["fsdp", None]
    assert layouts["data8"]["blocks"]["mixer"]["in_proj"] == [None, None, None]

    for name in SHARDED_MESHES:
        sharded = tmp_path / name
        expected, got = losses(single), losses(sharded)
        assert sorted(got) == [1, 2, 3]
        np.testing.assert_allclose([got[s] for s in sorted(got)], [expected[s] for s in sorted(expected)],
                                   rtol=2e-6, err_msg=name)
        assert read_metrics(sharded)[-1]["eval/top1"] == read_metrics(single)[-1]["eval/top1"]
        for item in ("params", "ema_params"):
            ours = traverse_util.flatten_dict(restore_params(sharded / "checkpoints", item=item))
            reference = traverse_util.flatten_dict(restore_params(single / "checkpoints", item=item))
            for key in reference:
                np.testing.assert_allclose(ours[key], reference[key], rtol=1e-5, atol=1e-6, err_msg=f"{name} {key}")
