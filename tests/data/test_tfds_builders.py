"""The TFDS builder: splits past TFDS's 1 GB in-memory buffer stay in memory (TFDS would
spill them through TensorFlow, which is not installed); past the budget, a named error; frames
and masks stored as raw bytes, and shards of TFDS's default encoding still read the same."""
import dataclasses
import json

import numpy as np
import pytest
import tensorflow_datasets as tfds
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


def test_shards_of_tfds_default_encoding_read_as_todays_do(small, tmp_path, monkeypatch):
    """Shards prepared before frames and masks were stored as bytes (TFDS's default: every
    pixel an int64 of a protobuf list) are read through their own features.json."""
    today = prepare(small, report=lambda msg: None)
    tensor = tfds.features.Tensor
    with monkeypatch.context() as patch:      # the builder as it was: no encoding given
        patch.setattr(tfds.features, "Tensor", lambda encoding=None, **kw: tensor(**kw))
        old = dataclasses.replace(small, prepare=dataclasses.replace(
            small.prepare, out_dir=str(tmp_path / "prepared-before")))
        before = prepare(old, report=lambda msg: None)

    def stored(builder_dir):
        feature = json.loads((builder_dir / "features.json").read_text())
        return feature["featuresDict"]["features"]["frames"]["tensor"]["encoding"]

    assert (stored(today), stored(before)) == ("bytes", "none")
    (source, lengths), (source_before, lengths_before) = (
        open_split(small.prepared_dir, "test"), open_split(old.prepared_dir, "test"))
    assert lengths == lengths_before and len(source) == len(source_before) > 0
    for i in range(len(source)):
        example, example_before = source[i], source_before[i]
        assert example.keys() == example_before.keys()
        for key, value in example.items():
            value, value_before = np.asarray(value), np.asarray(example_before[key])
            assert value.dtype == value_before.dtype and value.shape == value_before.shape
            np.testing.assert_array_equal(value, value_before)
