"""The selective scan: one public function, interchangeable backends.

A backend is anything with `selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
reverse)` and, optionally, a fused `selective_scan_bidirectional(u, delta, A, B, C, D, z,
delta_bias, delta_softplus, out_scale)`: a module registered by name, or an object that carries
its own options (e.g. `pallas_kernels.selective_scan.PallasScan(config=..., interpret=True)`).
Such an object is passed as `backend=` (alone or in a sequence with names); being hashable it
can sit in a frozen model config and be a static argument of `jax.jit`, so a function traced
with one set of options never silently keeps another's. A backend that cannot run here (wrong
platform, missing package, unsupported shape) raises `NotImplementedError`, at import or at call,
and the next one is tried. Calls happen at trace time, so the fall-through costs nothing inside
`jax.jit`.

Backends outside this package register themselves with `register_backend` when imported; the
op imports the modules in `PLUGIN_MODULES` on first use, skipping those that are not installed.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Sequence

import jax
import jax.numpy as jnp

# name -> module (or dotted path, imported on first use) implementing it.
_BACKENDS: dict[str, Any] = {
    "reference": "vim_jax.ops.reference",
    "associative": "vim_jax.ops.associative",
    "sequential": "vim_jax.ops.sequential",
}
# Fastest first, per platform; `backend=None` walks this list. On CPU the sequential scans are
# faster than the associative one (vim_tiny inference 1.07 s vs 3.87 s at batch 4), and the one
# with the hand-written VJP trains faster than the reference (README's CPU model: 2.4x on the
# scan's gradient, 1.3-1.6x on the gradient of the loss; experiments/results/fashion_mnist_cpu.md).
_PREFERENCE = {
    # The kernel packages' backends, fastest first where they can run (they register on import;
    # absent ones are skipped): mosaic (Hopper) has the fastest forward, pallas runs on any CUDA GPU,
    # triton (the same kernels on jax-triton) stays behind pallas until it is measured on a GPU.
    "gpu": ("mosaic", "pallas", "triton", "associative", "reference"),
    "cpu": ("sequential", "reference", "associative"),
}
_DEFAULT_PREFERENCE = ("associative", "reference")
# Kernel packages that call `register_backend` when imported (an absent one is skipped).
PLUGIN_MODULES = ("pallas_kernels.selective_scan", "pallas_kernels.mosaic_scan", "pallas_kernels.triton_scan")
_plugins_loaded = False


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for module in PLUGIN_MODULES:
        try:
            importlib.import_module(module)
        except (ImportError, NotImplementedError):
            pass  # not installed, or cannot run here: its backend is simply not offered


def list_backends() -> tuple[str, ...]:
    """Names accepted by the `backend` argument."""
    _load_plugins()
    return tuple(_BACKENDS)


def register_backend(name: str, module: str | ModuleType | Any, platforms: Sequence[str] = ()) -> None:
    """Registers `module` (a dotted path, a module or a backend object) as backend `name`,
    preferred first on each of `platforms` (e.g. ``("gpu",)``); the last registered comes first.
    The kernel packages of `PLUGIN_MODULES` pass no platforms: their order is `_PREFERENCE`'s."""
    _BACKENDS[name] = module
    for platform in platforms:
        _PREFERENCE[platform] = (name,) + tuple(b for b in _PREFERENCE.get(platform, ()) if b != name)


def candidate_backends(backend: Any = None) -> tuple:
    """The backends `backend` stands for, in the order they are tried (None: this platform's):
    names, and backend objects as given."""
    _load_plugins()
    if backend is None:
        return tuple(b for b in _PREFERENCE.get(jax.default_backend(), _DEFAULT_PREFERENCE) if b in _BACKENDS)
    items = tuple(backend) if isinstance(backend, (tuple, list)) else (backend,)
    unknown = [b for b in items if isinstance(b, str) and b not in _BACKENDS]
    if unknown:
        raise ValueError(f"unknown selective-scan backend(s) {unknown}; expected one of {list_backends()}")
    bad = [b for b in items if not isinstance(b, str) and not hasattr(b, "selective_scan")]
    if bad:
        raise TypeError(f"selective-scan backend objects need a selective_scan method, got {bad}")
    return items


def _load(backend):
    """The module or object behind `backend` (a name or a backend object)."""
    if not isinstance(backend, str):
        return backend
    target = _BACKENDS[backend]
    if isinstance(target, str):
        try:
            target = importlib.import_module(target)
        except ImportError as e:
            raise NotImplementedError(f"backend {backend!r} is not importable here: {e}") from e
    if not hasattr(target, "selective_scan"):
        raise NotImplementedError(f"backend {backend!r} ({target}) defines no selective_scan")
    return target


def _run(backend, entry: str, *args):
    """Calls `entry` of the first candidate backend that runs; raises if none does."""
    reasons = []
    for candidate in candidate_backends(backend):
        try:
            return getattr(_load(candidate), entry)(*args)
        except NotImplementedError as e:
            reasons.append(f"{candidate}: {e}")
    raise NotImplementedError("no selective-scan backend could run: " + "; ".join(reasons))


def _check(name, x, shape, op="selective_scan"):
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{op}: {name} must be an array, got {type(x).__name__}")
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} has shape {tuple(x.shape)}, expected {tuple(shape)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{op}: {name} must be floating point, got {x.dtype}")


def _validate(u, delta, A, B, C, D, z, delta_bias, lead=()):
    if getattr(u, "ndim", None) != len(lead) + 3:
        raise ValueError(
            f"selective_scan: u must be {list(lead) + ['batch', 'length', 'channels']}, "
            f"got shape {getattr(u, 'shape', None)}")
    _check("u", u, u.shape)
    _check("delta", delta, u.shape)
    validate_state_space(u.shape[len(lead):], A, B, C, D, z, delta_bias, lead)


def validate_state_space(shape, A, B, C, D, z, delta_bias, lead=(), op="selective_scan"):
    """Checks the scan's operands other than u and delta for inputs of `shape` = (batch, length,
    channels), with a leading `lead` on all but z (shared by the directions)."""
    batch, length, channels = shape
    lead = tuple(lead)
    if getattr(A, "ndim", None) != len(lead) + 2:
        raise ValueError(f"{op}: A must be {list(lead) + ['channels', 'state']}, got shape {getattr(A, 'shape', None)}")
    state = A.shape[-1]
    _check("A", A, lead + (channels, state), op)
    _check("B", B, lead + (batch, length, state), op)
    _check("C", C, lead + (batch, length, state), op)
    for name, x in (("D", D), ("delta_bias", delta_bias)):
        if x is not None:
            _check(name, x, lead + (channels,), op)
    if z is not None:
        _check("z", z, (batch, length, channels), op)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=True,
                   reverse=False, backend=None):
    """The selective state-space scan of Mamba, over `[batch, length, channels]` inputs.

    With `delta = softplus(delta + delta_bias)` (softplus when `delta_softplus`), for each channel
    `c` the state `h_t[c] in R^state` follows

        h_t = exp(delta_t * A) * h_{t-1} + delta_t * u_t * B_t,      h_{-1} = 0
        y_t = C_t . h_t + D * u_t,           out_t = y_t * silu(z_t)

    from the first token to the last, or from the last to the first when `reverse` (no flipped
    copies are made). The state is kept in float32 (float64 for float64 inputs).

    Args:
      u, delta: `[batch, length, channels]`; z (optional gate): same shape.
      A: `[channels, state]` (negative for a decaying state). B, C: `[batch, length, state]`.
      D, delta_bias: optional `[channels]`.
      backend: a name from `list_backends()`, a backend object carrying its options, a sequence
        of those tried in order, or None for the fastest one that runs on this platform.

    Returns:
      `[batch, length, channels]` in `u`'s dtype.
    """
    _validate(u, delta, A, B, C, D, z, delta_bias)
    return _run(backend, "selective_scan", u, delta, A, B, C, D, z, delta_bias, delta_softplus, reverse)


def selective_scan_bidirectional(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                                 delta_softplus=True, out_scale=0.5, backend=None):
    """Both directions of Vim's mixer in one call: `out_scale * (y_fwd + y_bwd) * silu(z)`.

    Every input but `z` carries a leading axis of size 2: index 0 scans first-to-last, index 1
    last-to-first (each with its own `A`, `D`, `delta_bias`), over the same token order. `z` is
    `[batch, length, channels]` and gates both. Backends with a fused kernel run it in one launch;
    the others run `selective_scan` twice.
    """
    _validate(u, delta, A, B, C, D, z, delta_bias, lead=(2,))
    reasons = []
    for name in candidate_backends(backend):
        try:
            module = _load(name)
            fused = getattr(module, "selective_scan_bidirectional", None)
            if fused is not None:
                try:
                    return fused(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_scale)
                except NotImplementedError as e:
                    reasons.append(f"{name} (fused): {e}")
            return _two_directions(module, u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_scale)
        except NotImplementedError as e:
            reasons.append(f"{name}: {e}")
    raise NotImplementedError("no selective-scan backend could run: " + "; ".join(reasons))


def _two_directions(module, u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_scale):
    def one(k):
        pick = lambda x: None if x is None else x[k]
        return module.selective_scan(u[k], delta[k], A[k], B[k], C[k], pick(D), None, pick(delta_bias),
                                     delta_softplus, k == 1)
    y = (one(0).astype(jnp.float32) + one(1).astype(jnp.float32)) * out_scale
    if z is not None:
        y = y * jax.nn.silu(z.astype(jnp.float32))
    return y.astype(u.dtype)
