"""Token orders for the SSM directions, as permutations of the token sequence.

An order names the sequence in which one scan direction visits the patches of the `h x w` grid:

- `raster`: row-major (the paper's forward direction); `column`: column-major;
- `zigzag_rows` / `zigzag_columns`: snake order, every other row (column) walked backwards;
- `window{k}` (e.g. `window2`): k x k windows in raster order, raster order inside each window;
- `reversed_<order>` for any of those: the same path walked from its end (the paper's backward
  direction is `reversed_raster`). It is run as a reverse scan, so it costs no extra permutation.

VMamba's four-route cross scan is `CROSS_SCAN`. Class tokens keep their sequence positions: the
scan reaches a class token at the same step as in the raster sequence, and the patches fill the
other steps in the order's sequence.
"""

from __future__ import annotations

import functools
import re

import numpy as np

CROSS_SCAN = ("raster", "column", "reversed_raster", "reversed_column")
_BASE = ("raster", "column", "zigzag_rows", "zigzag_columns")
_WINDOW = re.compile(r"window(\d+)$")
_REVERSED = "reversed_"


def list_orders() -> tuple[str, ...]:
    """Order names (windows shown for k=2; any k >= 1 is accepted)."""
    base = _BASE + ("window2",)
    return base + tuple(_REVERSED + b for b in base)


def _split(name: str) -> tuple[str, bool]:
    if name.startswith(_REVERSED):
        return name[len(_REVERSED):], True
    return name, False


def check_name(name: str) -> None:
    base, _ = _split(name)
    window = _WINDOW.match(base)
    if base not in _BASE and not (window and int(window.group(1)) >= 1):
        raise ValueError(f"unknown scan order {name!r}; expected one of {list_orders()} "
                         f"(window<k> for any k, reversed_ before any)")


def is_raster_family(name: str) -> bool:
    return _split(name)[0] == "raster"


def patch_order(base: str, grid: tuple[int, int]) -> np.ndarray:
    """Row-major patch indices in the order `base` visits them."""
    h, w = grid
    rows, cols = np.divmod(np.arange(h * w), w)
    if base == "raster":
        return np.arange(h * w)
    if base == "column":
        return np.lexsort((rows, cols))
    if base == "zigzag_rows":
        snake_cols = np.where(rows % 2 == 1, w - 1 - cols, cols)
        return np.lexsort((snake_cols, rows))
    if base == "zigzag_columns":
        snake_rows = np.where(cols % 2 == 1, h - 1 - rows, rows)
        return np.lexsort((snake_rows, cols))
    k = int(_WINDOW.match(base).group(1))
    if k < 1:
        raise ValueError(f"window size must be >= 1, got {base!r}")
    return np.lexsort((cols, rows, cols // k, rows // k))


@functools.lru_cache(maxsize=256)
def sequence_order(name: str, grid: tuple[int, int], cls_positions: tuple[int, ...]):
    """`(perm, reverse)` for one direction: the scan visits `tokens[perm]` (None: as they are),
    from last to first when `reverse`. Returns numpy index arrays (static under jit)."""
    check_name(name)
    base, reverse = _split(name)
    order = patch_order(base, grid)
    if np.array_equal(order, np.arange(order.size)):
        return None, reverse
    length = order.size + len(cls_positions)
    patch_slots = np.setdiff1d(np.arange(length), np.asarray(cls_positions, dtype=np.int64))
    perm = np.arange(length)
    perm[patch_slots] = patch_slots[order]
    return perm, reverse


def inverse(perm: np.ndarray) -> np.ndarray:
    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.size)
    return inv
