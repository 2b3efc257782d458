"""Config files and ``--config.a.b=value`` overrides, like ``ml_collections.config_flags`` without absl.

A config file is a Python file with ``get_config(arg)`` returning an ``ml_collections.ConfigDict``;
``path.py:arg`` passes ``arg`` (``None`` without one). Overrides name a dotted field and a value,
which is converted to the type of the value it replaces: ``--config.optim.base_lr=1e-3``,
``--config.mesh.fsdp 4``, ``--config.dataset.flip=false``, ``--config.init_from=/ckpt`` (a field
that is None takes a Python literal, or else the text as a string). ``config.model`` holds
overrides of the registered model's config (``VimConfig``, ``DeiTConfig``), so any field of it may
be given there, set in the file or not: ``--config.model.scan_backend=reference``.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import ml_collections

from vim_jax import registry

OVERRIDE_PREFIX = "--config."


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Runs ``get_config(arg)`` of the file in ``spec`` (``path.py`` or ``path.py:arg``)."""
    path, arg = spec, ""
    if ".py:" in spec:
        cut = spec.rindex(".py:") + len(".py")
        path, arg = spec[:cut], spec[cut + 1:]
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} not found")
    module_spec = importlib.util.spec_from_file_location(f"_vim_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise AttributeError(f"config file {path} defines no get_config(arg)")
    config = module.get_config(arg or None)
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


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"expected a boolean (true/false), got {text!r}")


def _literal_or_text(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_value(text: str, current: Any) -> Any:
    """``text`` converted to the type of ``current`` (the value it replaces)."""
    if text.strip().lower() in ("none", "null") and not isinstance(current, str):
        return None
    if isinstance(current, bool):
        return _parse_bool(text)
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, str):
        return text
    if isinstance(current, (tuple, list)):
        value = ast.literal_eval(text)
        return type(current)(value) if isinstance(value, (tuple, list)) else value
    return _literal_or_text(text)


def _model_defaults(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Field -> value of the registered config of ``config.model_name`` (what ``model`` overrides)."""
    if "model_name" not in config:
        return {}
    model_config = registry.get_config(config.model_name)
    return {f.name: getattr(model_config, f.name) for f in dataclasses.fields(model_config)}


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[tuple[str, str]]) -> None:
    """Sets each dotted ``key`` of ``config`` from its text, typed like the current value."""
    # The model's name first: it decides which fields `model.*` may add.
    overrides = sorted(overrides, key=lambda item: item[0] != "model_name")
    for key, text in overrides:
        *parents, leaf = key.split(".")
        node = config
        for depth, name in enumerate(parents):
            if name not in node or not isinstance(node[name], ml_collections.ConfigDict):
                raise KeyError(_unknown(".".join(parents[: depth + 1]), node, name))
            node = node[name]
        model_defaults = _model_defaults(config) if parents == ["model"] else {}
        if leaf in node:
            current = node[leaf]
        elif leaf in model_defaults:
            current = model_defaults[leaf]
        else:
            raise KeyError(_unknown(key, node, leaf, model_defaults))
        try:
            node[leaf] = parse_value(text, current)
        except (TypeError, ValueError, SyntaxError) as e:
            raise ValueError(f"--config.{key}={text}: {e}") from e


def _unknown(key: str, node: ml_collections.ConfigDict, name: str, extra: dict | None = None) -> str:
    close = difflib.get_close_matches(name, list(node.keys()) + list(extra or ()), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return f"the config has no field {key!r}{hint}"


def accept_overrides(parser: argparse.ArgumentParser) -> None:
    """Makes ``parser`` collect ``--config.<key>`` arguments into ``args.config_overrides``.

    argparse has no wildcard options, so the parser's own parsing is wrapped: the overrides are
    taken out first and the rest is parsed as usual. (This also works when ``parser`` is a
    subcommand's parser, which its parent calls through ``parse_known_args``.)
    """
    parse_known = parser.parse_known_args

    def parse_known_args(args=None, namespace=None):
        overrides, rest = split_overrides(sys.argv[1:] if args is None else list(args))
        namespace, extras = parse_known(rest, namespace)
        namespace.config_overrides = overrides
        return namespace, extras

    parser.parse_known_args = parse_known_args


def config_from_args(args: argparse.Namespace) -> ml_collections.ConfigDict:
    """The config of ``--config`` with the overrides applied."""
    config = load_config(os.fspath(args.config))
    apply_overrides(config, getattr(args, "config_overrides", []))
    return config

