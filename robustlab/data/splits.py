"""Deterministic train/val/test splits: a seeded permutation of a pool of n points, cut into the test,
val and train parts (``all``: the whole permutation). In-memory and streamed data sets share them."""
from __future__ import annotations

import math

import numpy as np

from ..errors import InputError

__all__ = ["holdout_index", "split_pool"]


def split_pool(n: int, seed: int, n_test: int, n_val: int) -> dict[str, np.ndarray]:
    """Indices of every split of a pool of n points: a permutation seeded by `seed`, whose first
    `n_test` are the test split, the next `n_val` the val split and the rest the train split."""
    perm = np.random.default_rng(seed).permutation(n)
    return {
        "test": perm[:n_test],
        "val": perm[n_test:n_test + n_val],
        "train": perm[n_test + n_val:],
        "all": perm,
    }


def holdout_index(n: int, split: str, seed: int, val_fraction: float, name: str, has_test: bool) -> np.ndarray:
    """The indices of `split` in a user's training pool of n points: val (and test, when the files have
    no test split) hold out ``round(val_fraction * n)`` points each.

    A pool too small to hold out any point gives an empty val split (training then keeps the last
    checkpoint, see ``training.loop``) and refuses an empty test split."""
    n_val = int(round(val_fraction * n))
    n_test = 0 if has_test else n_val
    if split == "test" and n_test == 0:
        need = f"at least {math.ceil(1 / val_fraction)} samples" if val_fraction > 0 else "a val_fraction above 0"
        raise InputError(f"{name}: {n} samples: the held-out test split is empty (val_fraction {val_fraction:g} "
                         f"holds out {n_val}); give {need} to evaluate on")
    return split_pool(n, seed, n_test, n_val)[split]
