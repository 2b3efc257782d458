"""Training and evaluation: ``vim-jax train`` / ``vim-jax eval`` (see ``train.py`` for the loop).

Submodules are imported by whoever needs them; importing this package imports nothing else.
"""
