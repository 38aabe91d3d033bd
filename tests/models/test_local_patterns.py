"""Paper 003's CMAM (eq. 1) against numpy, and the RM's layer structure."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tvad_jax.models.local_patterns import (ReconstructionModule, RMConfig, cmam,
                                            reconstruction_errors)


def _numpy_cmam(sentence, tokens, weights):
    dots = np.einsum("bh,bqh->bq", sentence, tokens)
    if weights == "cosine":
        dots = dots / (np.linalg.norm(sentence, axis=-1)[:, None] *
                       np.linalg.norm(tokens, axis=-1))
    elif weights == "softmax":
        z = dots / np.sqrt(sentence.shape[-1])
        dots = np.exp(z - z.max(-1, keepdims=True))
        dots = dots / dots.sum(-1, keepdims=True)
    return np.einsum("bq,bqh->bh", dots, tokens)


@pytest.mark.parametrize("weights", ["cosine", "dot", "softmax"])
def test_cmam_weights_the_image_tokens_by_their_similarity_to_the_sentence(weights):
    rng = np.random.default_rng(0)
    sentence, tokens = rng.normal(size=(3, 6)), rng.normal(size=(3, 4, 6))
    got = np.asarray(cmam(jnp.asarray(sentence, jnp.float32), jnp.asarray(tokens, jnp.float32),
                          weights))
    np.testing.assert_allclose(got, _numpy_cmam(sentence, tokens, weights), rtol=1e-4,
                               atol=1e-5)


def test_cmam_hand_case_and_bad_weights():
    # tokens e1 and e2; the sentence points along e1: cosine weights 1 and 0 -> G = e1
    tokens = jnp.asarray([[[1.0, 0.0], [0.0, 2.0]]])
    np.testing.assert_allclose(cmam(jnp.asarray([[3.0, 0.0]]), tokens), [[1.0, 0.0]])
    # eq. 1's raw dot product scales by the sentence's norm: weights 3 and 0 -> 3 e1
    np.testing.assert_allclose(cmam(jnp.asarray([[3.0, 0.0]]), tokens, "dot"), [[3.0, 0.0]])
    with pytest.raises(ValueError, match="weights 'max'"):
        cmam(jnp.ones((1, 2)), tokens, "max")


def test_rm_is_seven_dense_layers_back_to_the_input_width():
    model = ReconstructionModule(RMConfig(hidden=16, layers=7))
    x = jnp.ones((5, 11))
    params = model.init(jax.random.key(0), x)["params"]
    shapes = [params[f"Dense_{i}"]["kernel"].shape for i in range(7)]
    assert shapes == [(11, 16)] + [(16, 16)] * 5 + [(16, 11)]
    assert model.apply({"params": params}, x).shape == (5, 11)
    errors = reconstruction_errors(x, jnp.zeros_like(x).at[0, 0].set(1.0))
    np.testing.assert_allclose(errors, [10 / 11] + [1.0] * 4, rtol=1e-6)
