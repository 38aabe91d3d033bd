"""The attention entry point against jax.nn.dot_product_attention's reference path."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tvad_jax.models import attention as A


def _qkv(B=2, T=6, S=6, N=4, K=2, H=8, seed=0):
    keys = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(keys[0], (B, T, N, H)), jax.random.normal(keys[1], (B, S, K, H)),
            jax.random.normal(keys[2], (B, S, K, H)))


def _both(q, k, v, implementation="einsum", **kw):
    def run(implementation):
        def f(q, k, v):
            return A.attention(q, k, v, implementation=implementation, **kw)
        out = f(q, k, v)
        grads = jax.grad(lambda *x: jnp.sum(jnp.sin(f(*x))), argnums=(0, 1, 2))(q, k, v)
        return out, grads
    return run(implementation), run("xla")


@pytest.mark.parametrize("kw", [
    {},
    {"is_causal": True},
    {"key_lengths": jnp.asarray([6, 3])},
    {"is_causal": True, "key_lengths": jnp.asarray([4, 6])},
    {"mask": jnp.asarray(np.random.default_rng(0).random((2, 4, 6, 6)) > 0.3)},   # per head
    {"mask": jnp.asarray(np.random.default_rng(1).random((2, 1, 1, 6)) > 0.3)},   # keys only
], ids=["plain", "causal", "lengths", "causal+lengths", "head-mask", "key-mask"])
def test_einsum_equals_the_reference_forward_and_gradient(kw):
    (out, grads), (ref, ref_grads) = _both(*_qkv(), **kw)
    np.testing.assert_allclose(out, ref, atol=2e-6)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, atol=2e-5)


@pytest.mark.parametrize("kw", [
    {},
    {"is_causal": True, "key_lengths": jnp.asarray([4, 6])},
    {"mask": jnp.asarray(np.random.default_rng(0).random((2, 4, 6, 6)) > 0.3)},   # per head
    {"mask": jnp.asarray(np.random.default_rng(1).random((2, 1, 1, 6)) > 0.3)},   # keys only
], ids=["plain", "causal+lengths", "head-mask", "key-mask"])
def test_query_rows_in_blocks_equal_the_reference(monkeypatch, kw):
    """12 rows per key/value head (2 query heads x 6 queries) in blocks of 5: the last block
    padded."""
    monkeypatch.setattr(A, "ROW_BLOCK", 5)
    monkeypatch.setattr(A, "BLOCKED_ABOVE", 0)
    (out, grads), (ref, ref_grads) = _both(*_qkv(), **kw)
    np.testing.assert_allclose(out, ref, atol=2e-6)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, atol=2e-5)


@pytest.mark.parametrize("kw", [
    {"is_causal": True},
    {"is_causal": True, "key_lengths": jnp.asarray([9, 4])},
    {"is_causal": True, "mask": jnp.asarray((np.random.default_rng(2).random((2, 4, 11, 11))
                                             > 0.3) | np.eye(11, dtype=bool))},
], ids=["causal", "causal+lengths", "causal+head-mask"])
def test_causal_attention_in_query_blocks_equals_the_reference(monkeypatch, kw):
    """11 queries in causal blocks of 4 (the last one short), each over the keys up to its
    last query (every query sees itself: see the module docstring on rows that see none)."""
    monkeypatch.setattr(A, "CAUSAL_BLOCK", 4)
    (out, grads), (ref, ref_grads) = _both(*_qkv(T=11, S=11), **kw)
    np.testing.assert_allclose(out, ref, atol=2e-6)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, atol=2e-5)


def test_causal_blocks_whose_rows_go_in_row_blocks_equal_the_reference(monkeypatch):
    """Causal blocks of 4 queries (8 rows per key/value head) read in row blocks of 3."""
    monkeypatch.setattr(A, "CAUSAL_BLOCK", 4)
    monkeypatch.setattr(A, "ROW_BLOCK", 3)
    monkeypatch.setattr(A, "BLOCKED_ABOVE", 0)
    (out, grads), (ref, ref_grads) = _both(*_qkv(T=11, S=11), is_causal=True,
                                           key_lengths=jnp.asarray([9, 11]))
    np.testing.assert_allclose(out, ref, atol=2e-6)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, atol=2e-5)


def test_a_row_with_no_visible_key_averages_the_values_as_the_reference_does():
    q, k, v = _qkv(B=1, T=2, S=3, N=2, K=2)
    mask = jnp.asarray([[[[True, False, True], [False, False, False]]]])   # query 1 sees none
    out = A.attention(q, k, v, mask, implementation="einsum")
    np.testing.assert_allclose(out[0, 1], v[0].mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(out, A.attention(q, k, v, mask, implementation="xla"), atol=2e-6)


@pytest.mark.parametrize("shape, kw", [
    ((2, 6, 6, 4, 2), {"is_causal": True, "key_lengths": jnp.asarray([4, 6])}),
    ((2, 6, 6, 4, 2), {"mask": jnp.asarray(np.random.default_rng(0).random((2, 4, 6, 6))
                                           > 0.3)}),
    ((2, 6, 6, 4, 2), {"mask": jnp.asarray(np.random.default_rng(1).random((2, 1, 1, 6))
                                           > 0.3)}),
    ((1, 200, 200, 2, 1), {"is_causal": True, "key_lengths": jnp.asarray([170])}),
], ids=["causal+lengths", "head-mask", "key-mask", "causal-2-tiles"])
def test_pallas_tpu_kernel_equals_the_reference_forward_and_gradient(shape, kw):
    """The TPU flash kernel in Pallas' TPU interpreter: grouped heads repeated, padding, key
    lengths and keys-only masks as segment ids, other masks as a bias."""
    from jax.experimental.pallas import tpu as pltpu
    B, T, S, N, K = shape
    with pltpu.force_tpu_interpret_mode():
        (out, grads), (ref, ref_grads) = _both(*_qkv(B=B, T=T, S=S, N=N, K=K), "pallas", **kw)
    np.testing.assert_allclose(out, ref, atol=2e-5)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, atol=5e-5)


def test_pallas_row_with_no_visible_key_averages_its_padded_tile():
    """The module docstring's one departure from the reference: 3 keys padded to a tile of
    PALLAS_BLOCK, none visible -> their sum over the tile's length."""
    from jax.experimental.pallas import tpu as pltpu
    q, k, v = _qkv(B=1, T=3, S=3, N=2, K=2)
    with pltpu.force_tpu_interpret_mode():
        out = A.attention(q, k, v, key_lengths=jnp.asarray([0]), implementation="pallas")
    np.testing.assert_allclose(out[0], jnp.broadcast_to(v[0].sum(0) / A.PALLAS_BLOCK, (3, 2, 8)),
                               atol=1e-6)


def test_half_precision_inputs_give_half_precision_outputs():
    q, k, v = (x.astype(jnp.bfloat16) for x in _qkv())
    out = A.attention(q, k, v, is_causal=True, implementation="einsum")
    ref = A.attention(q, k, v, is_causal=True, implementation="xla")
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(out.astype(jnp.float32), ref.astype(jnp.float32), atol=3e-2)


@pytest.mark.parametrize("shape", [(2, 1, 1, 6), (1, 6), (2, 4, 5, 6)],
                         ids=["keys-only", "2-d", "full"])
def test_the_mask_cudnn_gets_is_full_length_and_means_the_same(shape):
    q, k, v = _qkv(T=5)
    mask = jnp.asarray(np.random.default_rng(2).random(shape) > 0.3)
    full = A._full_length_mask(mask, 5, 6)
    assert full.shape[2:] == (5, 6) and full.shape[:2] == ((1,) * (4 - len(shape)) + shape)[:2]
    np.testing.assert_array_equal(A.attention(q, k, v, full, implementation="xla"),
                                  A.attention(q, k, v, mask, implementation="xla"))


@pytest.mark.parametrize("backend, dtype, expected", [
    ("cpu", jnp.float32, "einsum"), ("cpu", jnp.bfloat16, "einsum"),
    ("gpu", jnp.bfloat16, "cudnn"), ("gpu", jnp.float32, "xla"), ("tpu", jnp.bfloat16, "xla")])
def test_auto_picks_by_backend_and_dtype(monkeypatch, backend, dtype, expected):
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    q = jnp.zeros((1, 2, 2, 8), dtype)
    assert A.resolve("auto", q, q) == expected
    assert A.resolve("xla", q, q) == "xla"                   # a named one is kept


@pytest.mark.parametrize("T, S", [(577, 577), (2, 577), (577, 2)])
def test_auto_leaves_odd_lengths_to_xla_on_a_gpu(monkeypatch, T, S):
    """cuDNN refuses a gradient at odd lengths (ViT-L's 577 tokens on an H200)."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    q, k = jnp.zeros((1, T, 2, 8), jnp.bfloat16), jnp.zeros((1, S, 2, 8), jnp.bfloat16)
    assert A.resolve("auto", q, k) == "xla"


def test_bad_names_and_head_counts_are_refused():
    with pytest.raises(ValueError, match="flash"):
        A.attention(*_qkv(), implementation="flash")
    with pytest.raises(ValueError, match="flash"):
        A.set_default("flash")
    with pytest.raises(ValueError, match="multiple"):
        A.attention(*_qkv(N=3, K=2), implementation="einsum")
