#!/usr/bin/env bash
# Sets up a fresh machine for vim_jax: Debian data packages, then a virtual environment in .venv
# with the library, its test and data extras. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")"
SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
# Fashion-MNIST (the embedded default dataset) and WordNet (ImageNet class names for predict).
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq dataset-fashion-mnist wordnet-base >/dev/null
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
# PyTorch is only for the tests (writing real .pth files) and for exporting back to .pth; any
# torch>=2.1 works. 2.13.0 is pinned first because this workplace's machines carry its CPU build.
.venv/bin/pip install -q "torch==2.13.0"
.venv/bin/pip install -q -e ".[test]"
.venv/bin/python -m ipykernel install --user --name python3 >/dev/null
echo "vim_jax is set up in .venv (activate with: source .venv/bin/activate)"
