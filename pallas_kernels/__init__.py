"""Pallas GPU kernels for vim_jax; a backend of `vim_jax.ops`, imported lazily, nothing more."""
