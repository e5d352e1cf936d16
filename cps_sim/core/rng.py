"""Named random streams from one root seed.

Every stochastic source draws from its own stream, keyed by a stable name
(``"homes/load/noise/day12"``), derived as ``SeedSequence(root_seed,
spawn_key=blake2b(name))``.  Hence:

* the same (seed, name) always gives the same numbers, in any process and
  under any ``PYTHONHASHSEED``;
* adding a population, or drawing from a new stream, changes nothing in the
  other streams;
* devices appended to the end of a population keep the others' draws
  unchanged, as long as each quantity is drawn from its own stream in one
  vectorised call (numpy draws element by element in order).
"""

from __future__ import annotations

import hashlib

import numpy as np


def _name_key(name: str) -> tuple[int, ...]:
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=16).digest()
    return tuple(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4))


class RngStreams:
    """Factory of independent, reproducible ``numpy.random.Generator`` streams."""

    def __init__(self, root_seed: int):
        if root_seed < 0:
            raise ValueError(f"seed must be >= 0, got {root_seed}")
        self.root_seed = int(root_seed)

    def seed_sequence(self, name: str) -> np.random.SeedSequence:
        return np.random.SeedSequence(self.root_seed, spawn_key=_name_key(name))

    def generator(self, name: str) -> np.random.Generator:
        """A fresh generator for stream ``name`` (same name ⇒ same numbers)."""
        return np.random.Generator(np.random.PCG64(self.seed_sequence(name)))
