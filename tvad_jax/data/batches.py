"""Training batches of in-memory arrays for the engine: shuffled anew each epoch, repeated,
process-sliced.

    ds = array_batches({"x": x, "y": y}, batch_size=256, seed=0)   # rows along axis 0
    batch = next(iter(ds))        # {"x": x[idx], "y": y[idx]}, this process's rows

Shuffled row indices are batched globally and each process keeps its consecutive block of
rows (batch_size / process_count), as the engine expects. The iterator of the result is
checkpointable (`get_state`/`set_state`), so a resumed run sees the batches it would have.
"""
from __future__ import annotations

import grain
import jax
import numpy as np


def array_batches(arrays: dict[str, np.ndarray], batch_size: int, seed: int = 0,
                  process_index: int | None = None,
                  process_count: int | None = None) -> grain.IterDataset:
    """This process's batches {name: array[idx]} of rows of `arrays`, forever."""
    pi = jax.process_index() if process_index is None else process_index
    pc = jax.process_count() if process_count is None else process_count
    if batch_size % pc:
        raise ValueError(f"batch_size {batch_size} is not divisible by {pc} processes")
    sizes = {len(a) for a in arrays.values()}
    if len(sizes) != 1:
        raise ValueError(f"arrays of different lengths: { {k: len(a) for k, a in arrays.items()} }")
    rows = sizes.pop()
    if not rows:
        raise ValueError("no training rows")
    local = batch_size // pc
    return (grain.MapDataset.range(rows).shuffle(seed=seed).repeat()
            .batch(batch_size, drop_remainder=True)
            .map(lambda idx: idx[pi * local:(pi + 1) * local])
            .map(lambda idx: {name: a[idx] for name, a in arrays.items()})
            .to_iter_dataset())
