#!/usr/bin/env bash
# Sets up a fresh Debian/Ubuntu machine for vim_jax: the system packages it needs, then a virtual
# environment in .venv with the library and its test extras, and a Jupyter kernel named vim-jax.
# Safe to rerun.
#
#     ./setup.sh          # CPU (what CI runs)
#     ./setup.sh --cuda   # NVIDIA GPU: adds jax's CUDA 13 plugin (the driver must support CUDA 13)
set -euo pipefail
cd "$(dirname "$0")"
EXTRAS=test
case "${1:-}" in
  "") ;;
  --cuda) EXTRAS=test,cuda ;;
  *) echo "usage: ./setup.sh [--cuda]" >&2; exit 2 ;;
esac
SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
# Fashion-MNIST (the embedded default dataset) and WordNet (ImageNet class names for predict).
PACKAGES="dataset-fashion-mnist wordnet-base"
command -v python3 >/dev/null || PACKAGES="$PACKAGES python3 python3-venv"
$SUDO apt-get update -qq
# shellcheck disable=SC2086  # PACKAGES is a list of words
$SUDO apt-get install -y -qq $PACKAGES >/dev/null
# Stock Debian/Ubuntu ship python3 without what `venv` needs to bootstrap pip (python3-venv).
if ! python3 -m venv .venv >/dev/null 2>&1; then
  rm -rf .venv
  $SUDO apt-get install -y -qq python3-venv >/dev/null
  python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
# PyTorch is only for the tests (writing real .pth files) and for exporting back to .pth; any
# torch>=2.1 works. Its CPU build, from PyTorch's own wheel index, keeps the install small: the
# default Linux wheel brings several GB of CUDA libraries that neither use needs, even on a GPU
# machine. 2.13.0 is the version the tests were last run with. Only torch itself comes from that
# index (--no-deps); its dependencies come from PyPI with the library's, next.
.venv/bin/pip install -q --no-deps --extra-index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
.venv/bin/pip install -q -e ".[$EXTRAS]"
# A kernel of its own name for experiments/notebooks/inference.ipynb, leaving the user's default
# python3 kernel alone.
.venv/bin/python -m ipykernel install --user --name vim-jax --display-name "Python (vim-jax)" >/dev/null
.venv/bin/python -c "import jax; print('vim_jax is set up in .venv; jax', jax.__version__, 'runs on', jax.devices())"
echo "activate with: source .venv/bin/activate"
