"""The notebooks under experiments/notebooks run from top to bottom (nbclient, this interpreter),
under the kernel name they declare, the one `setup.sh` registers."""

from __future__ import annotations

from pathlib import Path

import ipykernel.kernelspec
import nbformat
import pytest
from nbclient import NotebookClient

from tests.convert.checkpoint_files import random_params
from vim_jax.convert import save_params
from vim_jax.convert.orbax_io import model_metadata
from vim_jax.data.fashion_mnist import CLASS_NAMES
from vim_jax.registry import get_config

REPO = Path(__file__).resolve().parents[1]
INFERENCE = REPO / "experiments" / "notebooks" / "inference.ipynb"
KERNEL = "vim-jax"  # setup.sh registers it for the user; the tests install their own copy
# A Jupyter kernel per notebook run, compiling a 224-px model.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def jupyter_path(tmp_path_factory) -> str:
    """A kernelspec named `KERNEL` running this very interpreter, found before any installed one of
    that name, so the notebook sees the environment under test whatever kernels the machine has."""
    prefix = tmp_path_factory.mktemp("jupyter")
    ipykernel.kernelspec.install(kernel_name=KERNEL, prefix=str(prefix))
    return str(prefix / "share" / "jupyter")


def execute(path: Path, jupyter_path: str, monkeypatch, **env) -> tuple[str, int]:
    """Runs the notebook; returns its text output and the number of images it displayed."""
    monkeypatch.setenv("JUPYTER_PATH", jupyter_path)
    for name in ("VIM_JAX_CHECKPOINT", "VIM_JAX_MODEL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    notebook = nbformat.read(path, as_version=4)
    assert notebook.metadata.kernelspec.name == KERNEL, "the notebook must name the kernel setup.sh installs"
    NotebookClient(notebook, kernel_name=KERNEL, timeout=300, resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "\n".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)
    return text, sum("image/png" in o.get("data", {}) for o in outputs)


def test_inference_without_checkpoint(jupyter_path, monkeypatch):
    text, figures = execute(INFERENCE, jupyter_path, monkeypatch)
    assert "NO CHECKPOINT: the weights are RANDOM" in text
    assert "compile: " in text and "steady state: " in text and "per batch of 4" in text
    assert figures == 1
    for caption in ("Grace Hopper: ", "gift pack: ", "Hopper, face: ", "gift pack, mirrored: "):
        assert caption in text


def test_inference_with_a_fashion_mnist_checkpoint(jupyter_path, monkeypatch, tmp_path):
    cfg = get_config("vim_test", img_size=28, patch_size=4, stride=4, in_chans=1)
    checkpoint = save_params(tmp_path / "fashion", random_params(cfg, seed=0), model_metadata(cfg, "vim_test"))
    text, figures = execute(INFERENCE, jupyter_path, monkeypatch, VIM_JAX_CHECKPOINT=str(checkpoint))
    assert f"loaded weights from {checkpoint}" in text and "RANDOM" not in text
    assert "28x28 images" in text and figures == 1
    predictions = [line for line in text.splitlines() if line.startswith("true: ")]
    assert len(predictions) == 4 and all(any(name in line for name in CLASS_NAMES) for line in predictions)
