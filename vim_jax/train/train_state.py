"""Building the model, its optimizer and a sharded :class:`~vim_jax.train.steps.TrainState` from a config.

The parameters are created inside ``jax.jit`` with the state's shardings as output shardings, so
each device materialises only its shard (and every host of a multi-host run agrees on the
values, being seeded alike). A pretrained checkpoint (``config.init_from``) replaces the freshly
initialised parameters; the optimizer moments start at zero either way.

The model's variables are split three ways: parameters (``nnx.Param``, the only ones the
optimizer sees), BatchNorm statistics (``nnx.BatchStat``: the forward pass in train mode updates
them) and the rest (RNG streams).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

import vim_jax
from vim_jax.convert import checkpoint_num_classes, orbax_io, read_backbone_params, read_params
from vim_jax.convert.checkpoint import HEAD
from vim_jax.models.segmentation import Segmentor
from vim_jax.train import mesh as mesh_lib
from vim_jax.train import optim
from vim_jax.train.steps import TrainState

log = logging.getLogger(__name__)

# How a model's variables are split: parameters, BatchNorm statistics, the rest (RNG streams).
VARIABLE_GROUPS = (nnx.Param, nnx.BatchStat, ...)


def create_model(config: ml_collections.ConfigDict) -> nnx.Module:
    """The registered model ``config.model_name`` with the ``config.model`` overrides."""
    return vim_jax.create_model(config.model_name, seed=config.seed, **config.model.to_dict())


@dataclasses.dataclass(frozen=True)
class ModelSetup:
    """The static half of training: model structure, optimizer, shardings, and the traced
    initialisation they were read from.

    Attributes:
      train_graphdef / eval_graphdef: the model's structure with dropout/drop path on / off.
      abstract_model: the model with shapes only (what checkpoint loaders fill), in eval mode.
      tx: the optimizer's update direction (see ``optim.make_optimizer``).
      state_shardings: a :class:`TrainState` of NamedShardings.
      abstract_state: a :class:`TrainState` of ShapeDtypeStructs carrying those shardings.
      decay_mask: which parameters get weight decay.
      initialisation: the traced (not yet compiled) function creating a fresh state.
    """

    train_graphdef: nnx.GraphDef
    eval_graphdef: nnx.GraphDef
    abstract_model: nnx.Module
    tx: optax.GradientTransformation
    state_shardings: Any
    abstract_state: Any
    decay_mask: dict
    initialisation: Any


def _shapes_of(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)


def model_setup(config: ml_collections.ConfigDict, mesh: Mesh) -> ModelSetup:
    """Everything about the model and its optimizer that does not depend on parameter values.

    The model is traced once, in its initialisation (``jax.jit(...).trace()``): the structure,
    logical axes, shardings and optimizer are read off that trace while it runs, the state's
    shapes are its outputs, and :func:`init_state` compiles the same trace; a resumed run never
    compiles it. The outputs are constrained to the state's shardings, so each device
    materialises only its shard.
    """
    rules = tuple(tuple(rule) for rule in config.sharding_rules)
    replicated = mesh_lib.replicated(mesh)
    found: dict[str, Any] = {}  # static facts read during the trace (no traced values leave it)

    def fresh_state() -> TrainState:
        """Step 0: new parameters, zero Adam moments, EMA = parameters, the model's fresh RNG streams
        and BatchNorm statistics."""
        model = create_model(config)
        model.train()
        train_graphdef, params, batch_stats, rngs = nnx.split(model, *VARIABLE_GROUPS)
        model.eval()
        eval_graphdef, *_ = nnx.split(model, *VARIABLE_GROUPS)
        graphdef, variables = nnx.split(model)
        param_shardings = mesh_lib.state_shardings(params, mesh, rules)
        param_shapes = nnx.to_pure_dict(_shapes_of(params))
        decay_mask = optim.weight_decay_mask(param_shapes, mesh_lib.logical_axes_of(params),
                                             decay_A_log=config.optim.decay_A_log)
        tx = optim.make_optimizer(config.optim, decay_mask, lr_scales=optim.layer_lr_scales(config.optim, param_shapes))
        params = nnx.to_pure_dict(params)
        state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                           ema_params=params if config.ema_decay else None, rngs=nnx.to_pure_dict(rngs),
                           batch_stats=nnx.to_pure_dict(batch_stats))
        shardings = TrainState(
            step=replicated,
            params=param_shardings,
            # Adam's moments are laid out like the parameters; counters are replicated.
            opt_state=optax.tree_map_params(tx, lambda _, sharding: sharding, state.opt_state, param_shardings,
                                            transform_non_params=lambda _: replicated,
                                            is_leaf=lambda x: isinstance(x, jax.sharding.Sharding)),
            ema_params=param_shardings if config.ema_decay else None,
            rngs=jax.tree.map(lambda _: replicated, state.rngs),
            batch_stats=jax.tree.map(lambda _: replicated, state.batch_stats))
        found.update(train_graphdef=train_graphdef, eval_graphdef=eval_graphdef, decay_mask=decay_mask, tx=tx,
                     shardings=shardings, abstract_model=(graphdef, _shapes_of(variables)))
        return jax.lax.with_sharding_constraint(state, shardings)

    initialisation = jax.jit(fresh_state).trace()
    shardings = found["shardings"]
    abstract_state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                  initialisation.out_info, shardings)
    abstract_model = nnx.merge(*found["abstract_model"])
    return ModelSetup(found["train_graphdef"], found["eval_graphdef"], abstract_model, found["tx"], shardings,
                      abstract_state, found["decay_mask"], initialisation)


def init_state(config: ml_collections.ConfigDict, setup: ModelSetup) -> TrainState:
    """A freshly initialised state, created shard by shard on the devices (``config`` is the one
    ``setup`` was made from: its traced initialisation already holds it)."""
    del config
    state = setup.initialisation.lower().compile()()
    # A no-op where the compiled outputs already carry the constrained shardings.
    return jax.device_put(state, setup.state_shardings)


def put_global(tree, shardings):
    """Host arrays (the same on every host) -> global jax.Arrays laid out by ``shardings``."""
    def put(value, sharding):
        value = np.asarray(value)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])
    return jax.tree.map(put, tree, shardings)


def model_metadata(config: ml_collections.ConfigDict, setup: ModelSetup) -> dict:
    """What checkpoints record about the model (registry name and full VimConfig)."""
    return orbax_io.model_metadata(setup.abstract_model.cfg, config.model_name)


def load_pretrained(state: TrainState, config: ml_collections.ConfigDict, setup: ModelSetup) -> TrainState:
    """Replaces the parameters (and EMA) by those of ``config.init_from``: an official ``.pth`` or
    a checkpoint of ours, read by ``vim_jax.convert.read_params`` (which resizes the position
    embedding to this model's patch grid). A classifier of another width is left out and the
    freshly initialised one kept, as upstream's ``--finetune`` does. A segmentor starts its
    backbone from a classifier's checkpoint (``vim_jax.convert.read_backbone_params``: class token
    and head left out, ``config.init_from_cls_token`` says where a ``.pth``'s class token sits when
    the file cannot) and keeps its fresh neck and heads, as upstream's ``backbone.pretrained``."""
    if isinstance(setup.abstract_model, Segmentor):
        params = _load_backbone(state, config, setup)
    else:
        params = _load_classifier(state, config, setup)
    log.info("initialised parameters from %s", config.init_from)
    # The EMA starts from the same values in buffers of its own (the train step donates both).
    ema = jax.tree.map(jnp.copy, params) if state.ema_params is not None else None
    return state.replace(params=params, ema_params=ema)


def _load_classifier(state: TrainState, config: ml_collections.ConfigDict, setup: ModelSetup) -> dict:
    path = config.init_from
    ours = setup.abstract_model.cfg.num_classes
    theirs = checkpoint_num_classes(path)
    new_head = theirs != ours
    loaded = read_params(path, setup.abstract_model, new_head=new_head).params
    shardings = {k: v for k, v in setup.state_shardings.params.items() if k in loaded}
    params = put_global(loaded, shardings)
    if new_head:
        if HEAD in state.params:  # a model with num_classes=0 has none
            params[HEAD] = state.params[HEAD]
        log.info("%s has a %d-class head, the model %d classes: the head starts from scratch", path, theirs, ours)
    return params


def _load_backbone(state: TrainState, config: ml_collections.ConfigDict, setup: ModelSetup) -> dict:
    segmentor = setup.abstract_model
    loaded = read_backbone_params(config.init_from, segmentor.backbone_model, cls_token=config.init_from_cls_token)
    *parents, name = Segmentor.BACKBONE_PATH
    shardings = setup.state_shardings.params
    params = dict(state.params)
    node = params
    for key in parents:  # copies of the dicts down to the backbone's, the rest shared
        node[key] = dict(node[key])
        node, shardings = node[key], shardings[key]
    node[name] = put_global(loaded.params, shardings[name])
    fresh = sorted(key for key in state.params if key != Segmentor.BACKBONE_PATH[0])
    log.info("%s; %s start from scratch", loaded.describe(), ", ".join(fresh))
    return params
