"""LoRA as a params transform: zero init, merged == unmerged, last-k layers, gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tvad_jax.models import lora
from tvad_jax.models.configs import tiny_decoder
from tvad_jax.models.vlm import decoder_abstract_params

rng = np.random.default_rng(0)
DEPTH, D, H, DH = 5, 8, 2, 3
merge = jax.jit(lora.merge, static_argnames=("alpha", "rank", "layers"))


def stack_params():
    """A scanned decoder-like tree: attn kernels [depth, D, H, Dh] plus untouched leaves."""
    r = lambda *s: jnp.asarray(rng.standard_normal(s), jnp.float32)
    return {"embed": r(11, D),
            "layers": {"attn": {"query": {"kernel": r(DEPTH, D, H, DH)},
                                "key": {"kernel": r(DEPTH, D, H, DH)},
                                "value": {"kernel": r(DEPTH, D, H, DH)},
                                "out": {"kernel": r(DEPTH, H, DH, D)}},
                       "input_norm": {"scale": r(DEPTH, D)}},
            "head": {"attn": {"query": {"kernel": r(D, H, DH)}}}}


def randomize_b(adapters):
    return {k: dict(v, b=jnp.asarray(rng.standard_normal(v["b"].shape), jnp.float32))
            for k, v in adapters.items()}


def test_zero_init_merge_is_identity():
    params = stack_params()
    ad = lora.init_lora(params, rank=4, rng=jax.random.key(0))
    assert sorted(ad) == ["head/attn/query/kernel", "layers/attn/query/kernel",
                          "layers/attn/value/kernel"]
    assert ad["layers/attn/query/kernel"]["a"].shape == (DEPTH, D, 4)
    assert ad["layers/attn/query/kernel"]["b"].shape == (DEPTH, 4, H, DH)
    assert ad["head/attn/query/kernel"]["a"].shape == (D, 4)
    merged = merge(params, ad, alpha=8, rank=4)
    jax.tree.map(np.testing.assert_array_equal, merged, params)


def test_merge_matches_formula_and_last_k_layers():
    params = stack_params()
    ad = randomize_b(lora.init_lora(params, rank=2, targets=("q_proj", "v_proj"), layers=2,
                                    rng=jax.random.key(1)))
    a = ad["layers/attn/query/kernel"]["a"]
    assert a.shape == (2, D, 2)
    merged = merge(params, ad, alpha=4, rank=2)
    for name in ("query", "value"):
        w0 = np.asarray(params["layers"]["attn"][name]["kernel"])
        w1 = np.asarray(merged["layers"]["attn"][name]["kernel"])
        ab = ad[f"layers/attn/{name}/kernel"]
        np.testing.assert_array_equal(w1[:DEPTH - 2], w0[:DEPTH - 2])   # untouched layers
        for j, layer in enumerate(range(DEPTH - 2, DEPTH)):
            want = w0[layer] + 2.0 * np.einsum("dr,rhk->dhk", ab["a"][j], ab["b"][j])
            np.testing.assert_allclose(w1[layer], want, atol=1e-5)
    for name in ("key", "out"):
        np.testing.assert_array_equal(merged["layers"]["attn"][name]["kernel"],
                                      params["layers"]["attn"][name]["kernel"])
    np.testing.assert_array_equal(merged["embed"], params["embed"])
    # an explicit slice selects other layers
    ad2 = randomize_b(lora.init_lora(params, 2, targets=("q_proj",), layers=slice(0, 2)))
    m2 = lora.merge(params, ad2, 4, 2, layers=slice(0, 2))
    m3 = merge(params, ad2, alpha=4, rank=2, layers=(0, 1))
    jax.tree.map(np.testing.assert_array_equal, m2, m3)
    np.testing.assert_array_equal(m2["layers"]["attn"]["query"]["kernel"][2:],
                                  params["layers"]["attn"]["query"]["kernel"][2:])
    assert not np.allclose(m2["layers"]["attn"]["query"]["kernel"][:2],
                           params["layers"]["attn"]["query"]["kernel"][:2])


def test_lora_dense_equals_merged():
    w = rng.standard_normal((D, H, DH)).astype(np.float32)
    a = rng.standard_normal((D, 4)).astype(np.float32)
    b = rng.standard_normal((4, H, DH)).astype(np.float32)
    x = rng.standard_normal((3, 7, D)).astype(np.float32)
    merged = lora.merge({"q": {"kernel": w}}, {"q/kernel": {"a": a, "b": b}}, 32, 4)["q"]["kernel"]
    want = np.einsum("bld,dhk->blhk", x, merged)
    np.testing.assert_allclose(lora.lora_dense(x, w, a, b, 32, 4), want, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(lora.lora_dense(x, w, a, b, 32, 4, jax.random.key(0), 0.0),
                               want, rtol=1e-5, atol=1e-4)
    dropped = lora.lora_dense(x, w, a, b, 32, 4, jax.random.key(0), 0.5)
    assert dropped.shape == want.shape and not np.allclose(dropped, want)
    with pytest.raises(ValueError):
        lora.lora_dense(x, w, a, b, 32, 4, None, 0.1)


def test_gradients_reach_a_and_b():
    params = stack_params()
    ad = lora.init_lora(params, rank=2, targets=("q_proj",), layers=2, rng=jax.random.key(2))
    x = jnp.asarray(rng.standard_normal((4, D)), jnp.float32)

    def loss(adapters):
        m = lora.merge(params, adapters, 4, 2)
        return jnp.sum(jnp.einsum("nd,ldhk->nlhk", x, m["layers"]["attn"]["query"]["kernel"]) ** 2)

    g = jax.grad(loss)(ad)["layers/attn/query/kernel"]
    assert np.abs(g["b"]).sum() > 0          # at init (b = 0) only b moves
    assert np.abs(g["a"]).sum() == 0
    g = jax.grad(loss)(randomize_b(ad))["layers/attn/query/kernel"]
    assert np.abs(g["a"]).sum() > 0 and np.abs(g["b"]).sum() > 0
    assert g["a"].shape == (2, D, 2)


def test_real_decoder_paths():
    """Targets find the scanned q/v kernels of the real `Decoder` (shapes only, no compile)."""
    cfg = tiny_decoder()
    abstract = decoder_abstract_params(cfg)
    ad = lora.init_lora(abstract, rank=16, layers=min(4, cfg.depth))
    assert sorted(ad) == ["layers/attn/query/kernel", "layers/attn/value/kernel"]
    k = min(4, cfg.depth)
    assert ad["layers/attn/query/kernel"]["a"].shape == (k, cfg.width, 16)
    assert ad["layers/attn/query/kernel"]["b"].shape == (k, 16, cfg.heads, cfg.dim_per_head)
    assert ad["layers/attn/value/kernel"]["b"].shape == (k, 16, cfg.kv_heads, cfg.dim_per_head)
    with pytest.raises(ValueError):
        lora.init_lora(abstract, rank=4, targets=("nothing_here",))
