"""Model families of vim_jax."""
