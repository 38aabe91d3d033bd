"""In-memory training batches: epochs, process slices, checkpointed iteration, bad input."""
import numpy as np
import pytest

from tvad_jax.data.batches import array_batches


def _take(ds_or_it, n):
    it = iter(ds_or_it)
    return [next(it) for _ in range(n)]


def test_each_epoch_visits_every_row_once_and_the_columns_stay_aligned():
    x = np.arange(12)
    batches = _take(array_batches({"x": x, "y": x * 10}, batch_size=4, seed=3), 6)
    for b in batches:
        np.testing.assert_array_equal(b["y"], b["x"] * 10)
    for epoch in (batches[:3], batches[3:]):
        assert sorted(np.concatenate([b["x"] for b in epoch]).tolist()) == list(range(12))
    assert not all(np.array_equal(a["x"], b["x"]) for a, b in zip(batches[:3], batches[3:]))


def test_processes_take_consecutive_blocks_of_one_global_batch():
    x = np.arange(10)
    whole = _take(array_batches({"x": x}, 4, seed=1, process_index=0, process_count=1), 5)
    parts = [_take(array_batches({"x": x}, 4, seed=1, process_index=p, process_count=2), 5)
             for p in (0, 1)]
    for step, batch in enumerate(whole):
        np.testing.assert_array_equal(
            np.concatenate([parts[0][step]["x"], parts[1][step]["x"]]), batch["x"])


def test_a_restored_iterator_goes_on_with_the_batches_it_would_have_given():
    ds = array_batches({"x": np.arange(7)}, 3, seed=0)
    it = iter(ds)
    _take(it, 4)
    state = it.get_state()
    expected = _take(it, 3)
    resumed = iter(ds)
    resumed.set_state(state)
    for a, b in zip(_take(resumed, 3), expected):
        np.testing.assert_array_equal(a["x"], b["x"])


@pytest.mark.parametrize("arrays, batch, count, match", [
    ({"x": np.arange(6)}, 3, 2, "not divisible by 2 processes"),
    ({"x": np.arange(6), "y": np.arange(5)}, 2, 1, "different lengths"),
    ({"x": np.arange(0)}, 2, 1, "no training rows"),
])
def test_bad_input_is_refused(arrays, batch, count, match):
    with pytest.raises(ValueError, match=match):
        array_batches(arrays, batch, process_index=0, process_count=count)
