"""Trainable and frozen params split by patterns and merged back."""
from __future__ import annotations

import pytest

from tvad_jax.train.state import merge_params, split_params


def test_split_and_merge_params():
    params = {"a": {"kernel": 1, "bias": 2}, "b": {"kernel": 3}}
    trainable, frozen = split_params(params, ("a/.*",))
    assert trainable == {"a": {"kernel": 1, "bias": 2}} and frozen == {"b": {"kernel": 3}}
    assert merge_params(trainable, frozen) == params
    with pytest.raises(ValueError, match="matches no parameter"):
        split_params(params, ("a/.*", "c/.*"))
