"""The TFDS builder: splits past TFDS's 1 GB in-memory buffer stay in memory (TFDS would
spill them through TensorFlow, which is not installed); past the budget, a named error."""
import pytest
from tensorflow_datasets.core import shuffle as tfds_shuffle

from tvad_jax.data import tfds_builders
from tvad_jax.data.pipeline import open_split
from tvad_jax.data.prepare import prepare
from tvad_jax.errors import DataError


def test_the_buffer_limit_is_raised_while_preparing_and_restored():
    saved = tfds_shuffle.MAX_MEM_BUFFER_SIZE
    with tfds_builders.in_memory_splits(saved * 4):
        assert tfds_shuffle.MAX_MEM_BUFFER_SIZE == saved * 4
    assert tfds_shuffle.MAX_MEM_BUFFER_SIZE == saved
    assert tfds_builders.memory_budget() > 1 << 30    # this machine has more than 2 GB


def test_a_split_over_the_budget_is_a_named_error(small, monkeypatch):
    monkeypatch.setattr(tfds_shuffle, "MAX_MEM_BUFFER_SIZE", 1000)
    monkeypatch.setattr(tfds_builders, "memory_budget", lambda: 1000)
    with pytest.raises(DataError, match=r"more than 0 MiB .*prepare.splits"):
        prepare(small, report=lambda msg: None)


def test_a_split_over_tfds_buffer_but_within_the_budget_is_prepared(small, monkeypatch):
    monkeypatch.setattr(tfds_shuffle, "MAX_MEM_BUFFER_SIZE", 1000)   # TFDS would spill
    prepare(small, report=lambda msg: None)
    source, lengths = open_split(small.prepared_dir, "test")
    assert len(source) == len(lengths) > 0
