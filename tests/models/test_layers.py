"""models/layers.py: `linear` and its weight gradient, `Dense` against `nn.Dense`,
`DepthwiseConv` against the grouped convolution."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tvad_jax.models import layers


@pytest.fixture(params=layers.WEIGHT_GRADS)
def weight_grad(request):
    layers.set_weight_grad(request.param)
    yield request.param
    layers.set_weight_grad("direct")


@pytest.mark.parametrize("x_shape, k_shape, in_dims", [
    ((3, 5, 6), (6, 4), 1),                # [B, L, D] . [D, F]
    ((2, 3, 4, 8), (4, 8, 5), 2),          # [B, L, H, Dh] . [H, Dh, D] (an output projection)
    ((7, 6), (6, 2, 3), 1),                # [M, D] . [D, H, Dh] (a query projection)
])
def test_linear_value_and_gradients_match_numpy(weight_grad, x_shape, k_shape, in_dims):
    rng = np.random.default_rng(0)
    x, kernel = rng.standard_normal(x_shape), rng.standard_normal(k_shape)
    out_shape = x_shape[:len(x_shape) - in_dims] + k_shape[in_dims:]
    probe = rng.standard_normal(out_shape)            # loss = sum(probe * y): dL/dy = probe

    def loss(x, kernel):
        return jnp.sum(jnp.asarray(probe, jnp.float32) * layers.linear(x, kernel, in_dims))

    x32, k32 = jnp.asarray(x, jnp.float32), jnp.asarray(kernel, jnp.float32)
    dx, dk = jax.jit(jax.grad(loss, argnums=(0, 1)))(x32, k32)
    # numpy: flatten to matrices, y = X K, dX = G K^T, dK = X^T G
    X = x.reshape(-1, int(np.prod(k_shape[:in_dims])))
    K = kernel.reshape(X.shape[1], -1)
    G = probe.reshape(X.shape[0], -1)
    np.testing.assert_allclose(layers.linear(x32, k32, in_dims), (X @ K).reshape(out_shape),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, (G @ K.T).reshape(x_shape), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dk, (X.T @ G).reshape(k_shape), rtol=1e-5, atol=1e-5)


def test_linear_gradients_keep_input_dtypes():
    x = jnp.ones((2, 3, 4), jnp.bfloat16)
    kernel = jnp.ones((4, 5), jnp.bfloat16)
    dx, dk = jax.grad(lambda x, k: layers.linear(x, k).astype(jnp.float32).sum(),
                      argnums=(0, 1))(x, kernel)
    assert (dx.dtype, dk.dtype) == (jnp.bfloat16, jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(dk, np.float32), np.full((4, 5), 6.0))


def _dots(fn, *args) -> int:
    return str(jax.make_jaxpr(fn)(*args)).count("dot_general")


def test_a_frozen_side_of_linear_is_not_differentiated():
    """Gradient for x alone (a frozen layer): the forward and dx, no kernel gradient; for the
    kernel alone (a first layer): no input gradient; both: three products."""
    x, kernel = jnp.ones((2, 3, 4)), jnp.ones((4, 5))
    loss = lambda x, k: layers.linear(x, k).sum()
    assert _dots(jax.grad(loss, argnums=0), x, kernel) == 2
    assert _dots(jax.grad(loss, argnums=1), x, kernel) == 2
    assert _dots(jax.grad(loss, argnums=(0, 1)), x, kernel) == 3
    np.testing.assert_array_equal(jax.grad(loss, argnums=1)(x, kernel), np.full((4, 5), 6.0))


def test_linear_refuses_mixed_dtypes():
    with pytest.raises(TypeError, match="bfloat16"):
        layers.linear(jnp.ones((2, 4), jnp.bfloat16), jnp.ones((4, 3)))


def test_swiglu_gradient_matches_autodiff_of_its_formula():
    rng = np.random.default_rng(3)
    gate, up = (jnp.asarray(rng.standard_normal((3, 7)), jnp.float32) for _ in range(2))
    probe = jnp.asarray(rng.standard_normal((3, 7)), jnp.float32)
    ours = jax.grad(lambda g, u: jnp.sum(probe * layers.swiglu(g, u)), argnums=(0, 1))
    plain = jax.grad(lambda g, u: jnp.sum(probe * g / (1 + jnp.exp(-g)) * u), argnums=(0, 1))
    np.testing.assert_allclose(layers.swiglu(gate, up), gate / (1 + np.exp(-gate)) * up,
                               rtol=1e-6)
    for a, b in zip(ours(gate, up), plain(gate, up)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_dense_has_the_params_and_values_of_nn_dense():
    x = jax.random.normal(jax.random.key(1), (2, 3, 6))
    ours, theirs = layers.Dense(4, name="proj"), nn.Dense(4, name="proj")
    p_ours = ours.init(jax.random.key(0), x)
    p_theirs = theirs.init(jax.random.key(0), x)
    assert jax.tree.structure(p_ours) == jax.tree.structure(p_theirs)
    for a, b in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_theirs)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ours.apply(p_ours, x), theirs.apply(p_theirs, x))
    # auto-named inside a compact module exactly as nn.Dense is (checkpoints keep their keys)
    assert "Dense_0" in _Wrapper(layers.Dense).init(jax.random.key(0), x)["params"]


class _Wrapper(nn.Module):
    dense: type

    @nn.compact
    def __call__(self, x):
        return self.dense(3)(x)


def test_depthwise_conv_is_the_grouped_convolution():
    """Values and gradients against XLA's grouped convolution ("SAME", one group per channel)."""
    x = jax.random.normal(jax.random.key(0), (2, 3, 4, 5, 6))
    conv = layers.DepthwiseConv((3, 1, 3))
    params = nn.unbox(conv.init(jax.random.key(1), x)["params"])
    assert params["kernel"].shape == (3, 1, 3, 6) and params["bias"].shape == (6,)

    def ours(p, x):
        return jnp.sum(jnp.sin(conv.apply({"params": p}, x)))

    def grouped(p, x):
        y = jax.lax.conv_general_dilated(x, p["kernel"][..., None, :], (1, 1, 1), "SAME",
                                         dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
                                         feature_group_count=6) + p["bias"]
        return jnp.sum(jnp.sin(y))

    np.testing.assert_allclose(ours(params, x), grouped(params, x), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(jax.grad(ours, (0, 1))(params, x)),
                    jax.tree.leaves(jax.grad(grouped, (0, 1))(params, x))):
        np.testing.assert_allclose(a, b, atol=1e-4)
    with pytest.raises(ValueError, match="odd kernel_size"):
        layers.DepthwiseConv((2, 3, 3)).init(jax.random.key(1), x)


def test_unknown_weight_grad_is_refused():
    with pytest.raises(ValueError, match="weight_grad 'fast'"):
        layers.set_weight_grad("fast")
