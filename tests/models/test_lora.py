"""LoRA as a params transform: zero init, merged == unmerged, last-k layers, gradients; the
decoder's unmerged hook (with dropout) against the merged decoder."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tvad_jax.models import lora
from tvad_jax.models.configs import tiny_decoder
from tvad_jax.models.decoder import Decoder, init_cache
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


# ------------------------------------------------------------------ unmerged, in the decoder
RANK, ALPHA, K = 4, 8.0, 2
DEC = tiny_decoder(depth=3)


def decoder_setup(cfg=DEC):
    """Frozen params, random embeddings [2, 6, D] and positions, adapters on the last K
    layers with random non-zero a and b."""
    dec = Decoder(cfg)
    embeds = jnp.asarray(rng.standard_normal((2, 6, cfg.width)), jnp.float32)
    positions = jnp.broadcast_to(jnp.arange(6), (2, 6))
    params = nn.unbox(dec.init(jax.random.key(0), embeds, positions)["params"])
    ad = lora.init_lora(params, RANK, layers=K, rng=jax.random.key(1))
    return dec, params, embeds, positions, ad


@functools.lru_cache
def decoder_fns():
    """Jitted (logits, prefill logits) of `Decoder(DEC)` taking (params, embeds, positions,
    lora); one compilation per lora structure (None or a dict)."""
    dec = Decoder(DEC)

    @jax.jit
    def logits(params, embeds, positions, lo):
        return dec.apply({"params": params}, embeds, positions, lora=lo)[0]

    @jax.jit
    def prefill(params, embeds, positions, lo):
        cache = init_cache(DEC, embeds.shape[0], 16)
        return dec.apply({"params": params}, embeds, positions, cache, None, lo)[0]

    return logits, prefill


def test_decoder_lora_pytree():
    params = stack_params()
    ad = randomize_b(lora.init_lora(params, 2, layers=(1, 3), rng=jax.random.key(3)))
    del ad["head/attn/query/kernel"]
    out = lora.decoder_lora(ad, DEPTH, alpha=4, rank=2, rate=0.1, rng=jax.random.key(0),
                            layers=(1, 3))
    assert sorted(out) == ["query", "rate", "rng", "value"]
    assert out["rng"].shape == (DEPTH,) and jax.dtypes.issubdtype(out["rng"].dtype,
                                                                  jax.dtypes.prng_key)
    out = {k: jax.tree.map(np.asarray, v) for k, v in out.items() if k != "rng"}
    assert out["query"]["a"].shape == (DEPTH, D, 2) and out["value"]["b"].shape == (DEPTH, 2, H, DH)
    np.testing.assert_allclose(out["rate"], np.full(DEPTH, 0.1, np.float32))
    for name in ("query", "value"):
        ab = ad[f"layers/attn/{name}/kernel"]
        np.testing.assert_array_equal(out[name]["a"][[1, 3]], ab["a"])
        np.testing.assert_allclose(out[name]["b"][[1, 3]], 2.0 * ab["b"], rtol=1e-6)
        for leaf in out[name].values():
            np.testing.assert_array_equal(leaf[[0, 2, 4]], 0.0)
    no_rng = lora.decoder_lora(ad, DEPTH, 4, 2, rate=0.1, layers=(1, 3))
    np.testing.assert_array_equal(no_rng["rate"], 0.0)
    with pytest.raises(ValueError):                     # selection of the wrong size
        lora.decoder_lora(ad, DEPTH, 4, 2, layers=3)
    with pytest.raises(ValueError):                     # the hook takes q and v only
        lora.decoder_lora({"layers/attn/query/kernel": ad["layers/attn/query/kernel"]},
                          DEPTH, 4, 2, layers=(1, 3))


def test_decoder_lora_equals_merged():
    """Rate 0: the unmerged hook gives the merged decoder's logits, with and without cache."""
    _, params, embeds, positions, ad = decoder_setup()
    ad = randomize_b(ad)
    logits, prefill = decoder_fns()
    lo = lora.decoder_lora(ad, DEC.depth, ALPHA, RANK, rng=jax.random.key(4))
    merged = lora.merge(params, ad, ALPHA, RANK)
    want = logits(merged, embeds, positions, None)
    assert not np.allclose(want, logits(params, embeds, positions, None), atol=1e-3)
    np.testing.assert_allclose(logits(params, embeds, positions, lo), want, atol=1e-5)
    np.testing.assert_allclose(prefill(params, embeds, positions, lo),
                               prefill(merged, embeds, positions, None), atol=1e-5)


def test_decoder_lora_dropout():
    """Rate > 0 changes the logits, deterministically in the rng."""
    _, params, embeds, positions, ad = decoder_setup()
    ad = randomize_b(ad)
    logits, _ = decoder_fns()
    run = lambda rate, key: np.asarray(logits(
        params, embeds, positions, lora.decoder_lora(ad, DEC.depth, ALPHA, RANK, rate, key)))
    clean = run(0.0, jax.random.key(0))
    dropped = run(0.3, jax.random.key(0))
    assert not np.allclose(dropped, clean, atol=1e-3)
    np.testing.assert_array_equal(run(0.3, jax.random.key(0)), dropped)
    assert not np.allclose(run(0.3, jax.random.key(1)), dropped, atol=1e-3)


def test_decoder_lora_gradients():
    """Gradients through the hook (remat on) land on the K-layer adapters only (the frozen
    params are a closed-over constant): at init (b = 0) b moves and a does not, and they
    equal the merged path's (rate 0)."""
    cfg = tiny_decoder(depth=3, remat=True)
    dec, params, embeds, positions, ad = decoder_setup(cfg)

    def loss(adapters, unmerged):
        if unmerged:
            lo = lora.decoder_lora(adapters, cfg.depth, ALPHA, RANK)
            out = dec.apply({"params": params}, embeds, positions, lora=lo)[0]
        else:
            out = dec.apply({"params": lora.merge(params, adapters, ALPHA, RANK)}, embeds,
                            positions)[0]
        return jnp.mean(jax.nn.logsumexp(out, -1) - out[..., 0])

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    g = grad(ad, True)
    assert jax.tree.structure(g) == jax.tree.structure(ad)
    for name in ("query", "value"):
        gq = g[f"layers/attn/{name}/kernel"]
        assert gq["a"].shape[0] == K and np.abs(gq["b"]).sum() > 0
        np.testing.assert_array_equal(gq["a"], 0.0)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6), g, grad(ad, False))


def test_decoder_without_lora_unchanged():
    """lora=None is the plain decoder: the same lowered program and bit-identical logits."""
    dec, params, embeds, positions, _ = decoder_setup()

    def plain(params, embeds, positions):
        return dec.apply({"params": params}, embeds, positions)[0]

    def none(params, embeds, positions):
        return dec.apply({"params": params}, embeds, positions, lora=None)[0]

    plain.__name__ = none.__name__ = "logits"
    args = (params, embeds, positions)
    assert jax.jit(plain).lower(*args).as_text() == jax.jit(none).lower(*args).as_text()
    np.testing.assert_array_equal(jax.jit(plain)(*args), decoder_fns()[0](*args, None))
