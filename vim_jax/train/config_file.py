"""Config files (``path.py:arg``) and ``--config.a.b=value`` overrides, through ``ml_collections.config_flags``.

A config file is a Python file with ``get_config(arg)`` returning an ``ml_collections.ConfigDict``;
``path.py:arg`` passes ``arg`` (nothing without one). ``config_flags`` loads the file and parses
every override, typed like the value it replaces: ``--config.optim.base_lr=1e-3``,
``--config.mesh.fsdp 4``, ``--config.dataset.flip=false``, ``--config.init_from=/ckpt``.

Why a wrapper and not ``config_flags.DEFINE_config_file`` on ``absl.flags.FLAGS``: ``vim-jax`` is an
argparse command line with subcommands, so argparse leaves the ``--config.*`` arguments over
(``vim_jax/cli.py``) and they are parsed here by ``config_flags`` on a private ``FlagValues``. The
wrapper adds only what config_flags does not do:

* ``config.model`` holds overrides of the registered model's config (``VimConfig``, ``DeiTConfig``),
  so any field of that config may be given, set in the file or not:
  ``--config.model.scan_backend=reference``;
* ``none`` clears a field of any type but ``str``, and a field that is None takes a Python literal,
  or else the text as a string (config_flags refuses to override a None field);
* an unknown field's error names the closest fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
from pathlib import Path
from typing import Any, Sequence

import ml_collections
from absl import flags
from ml_collections import config_dict, config_flags

from vim_jax import registry

OVERRIDE_PREFIX = "--config."
_FLAG = "config"


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Runs ``get_config(arg)`` of the file in ``spec`` (``path.py`` or ``path.py:arg``)."""
    path = Path(spec.split(":", 1)[0])
    # config_flags defers a missing file's error to the config's first use; fail here instead.
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file(_FLAG, flag_values=flag_values, lock_config=False, sys_argv=[])
    try:
        flag_values(["vim-jax", f"--{_FLAG}={spec}"])
    except flags.Error as e:  # absl wraps what get_config raised; that is the error to show
        raise e.__cause__ or e.__context__ or e
    config = flag_values[_FLAG].value
    if not isinstance(config, ml_collections.ConfigDict):
        raise TypeError(f"{path}: get_config returned {type(config).__name__}, expected a ConfigDict")
    return config


def split_overrides(argv: Sequence[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Separates ``--config.key=value`` / ``--config.key value`` from the other arguments."""
    overrides, rest = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith(OVERRIDE_PREFIX):
            key, has_value, value = arg[len(OVERRIDE_PREFIX):].partition("=")
            if not has_value:
                if i + 1 >= len(argv):
                    raise ValueError(f"{arg} needs a value")
                value = argv[i + 1]
                i += 1
            overrides.append((key, value))
        else:
            rest.append(arg)
        i += 1
    return overrides, rest


def _model_defaults(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Field -> value of the registered config of ``config.model_name`` (what ``model`` overrides)."""
    if "model_name" not in config:
        return {}
    model_config = registry.get_config(config.model_name)
    return {f.name: getattr(model_config, f.name) for f in dataclasses.fields(model_config)}


def _unknown(key: str, node: ml_collections.ConfigDict, name: str, extra: dict | None = None) -> str:
    close = difflib.get_close_matches(name, list(node.keys()) + list(extra or ()), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"the config has no field {key!r}{hint}"


def _prepare(config: ml_collections.ConfigDict, key: str, text: str) -> bool:
    """Readies ``config`` for config_flags to set ``key`` from ``text``; False when done here."""
    *parents, leaf = key.split(".")
    node = config
    for depth, name in enumerate(parents):
        if name not in node or not isinstance(node[name], ml_collections.ConfigDict):
            raise KeyError(_unknown(".".join(parents[: depth + 1]), node, name))
        node = node[name]
    if leaf not in node:
        model_defaults = _model_defaults(config) if parents == ["model"] else {}
        if leaf not in model_defaults:
            raise KeyError(_unknown(key, node, leaf, model_defaults))
        node[leaf] = model_defaults[leaf]  # gives the override the registered field's type
    current = node[leaf]
    if text.strip().lower() in ("none", "null") and not isinstance(current, str):
        node[leaf] = None
        return False
    if current is None:
        node[leaf] = config_dict.placeholder(object)  # config_flags parses an `object` field as a literal
    return True


def _parse_with_config_flags(config: ml_collections.ConfigDict, overrides: Sequence[tuple[str, str]]) -> None:
    argv = ["vim-jax"] + [f"{OVERRIDE_PREFIX}{key}={text}" for key, text in overrides if _prepare(config, key, text)]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_dict(_FLAG, config, flag_values=flag_values, lock_config=False, sys_argv=argv)
    try:
        flag_values(argv)
    except flags.Error as e:  # absl's message names the flag and its text: "flag --config.a=b: ..."
        raise ValueError(str(e)) from e


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[tuple[str, str]]) -> None:
    """Sets each dotted ``key`` of ``config`` from its text, typed like the current value."""
    # The model's name first: it decides which fields `model.*` may add.
    _parse_with_config_flags(config, [item for item in overrides if item[0] == "model_name"])
    _parse_with_config_flags(config, [item for item in overrides if item[0] != "model_name"])


def accept_overrides(parser: argparse.ArgumentParser) -> None:
    """Marks ``parser``'s command as taking ``--config.<key>`` arguments: ``vim_jax.cli`` collects
    them into ``args.config_overrides`` (argparse has no wildcard options)."""
    parser.set_defaults(config_overrides=[])


def config_from_args(args: argparse.Namespace) -> ml_collections.ConfigDict:
    """The config of ``--config`` with the overrides applied."""
    config = load_config(os.fspath(args.config))
    apply_overrides(config, getattr(args, "config_overrides", []))
    return config
