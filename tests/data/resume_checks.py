"""The resume check that every resumable batch iterator passes."""

from __future__ import annotations

import json

import numpy as np


def assert_resumes_with_identical_batches(make, before: int, after: int) -> None:
    """`make()` builds a fresh iterator; after `before` batches its state (as a checkpoint stores
    it: through JSON) restored into another fresh iterator must give the next `after` batches."""
    uninterrupted = make()
    for _ in range(before):
        next(uninterrupted)
    state = json.loads(json.dumps(uninterrupted.get_state()))
    expected = [next(uninterrupted) for _ in range(after)]
    resumed = make()
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    uninterrupted.close(), resumed.close()
