"""Llama decoder: parity with transformers' FlaxLlamaForCausalLM, KV cache, generation.

A tiny random Llama (grouped-query attention) is written in PyTorch layout; transformers' own
PyTorch->Flax converter reads it back to the HF Flax params, HF's model runs on them, and our
`load_llama` reads the same file. Cached decoding is checked against full recomputation.
"""
from __future__ import annotations

import dataclasses
import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hf_helpers import hf_reads_back, random_like

from tvad_jax.models import decoder
from tvad_jax.models.convert import CheckpointError, to_pytorch_layout, write_checkpoint
from tvad_jax.models.decoder import Decoder, LayerCache, cache_slots, init_cache
from tvad_jax.models.generate import generate
from tvad_jax.models.vlm import load_llama

ATOL = 1e-5


IDS = np.array([[1, 17, 33, 8, 90, 45, 12, 7, 64, 3],
                [1, 55, 21, 99, 14, 6, 70, 28, 0, 0]], np.int32)   # row 1: 8 tokens + padding
LENGTHS = np.array([10, 8], np.int32)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from transformers import FlaxLlamaForCausalLM, LlamaConfig

    hf_cfg = LlamaConfig(vocab_size=101, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0,
                         tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0, architectures=["LlamaForCausalLM"])
    model = FlaxLlamaForCausalLM(hf_cfg, _do_init=False)
    params = random_like(model.params_shape_tree, seed=5)
    directory = tmp_path_factory.mktemp("llama")
    write_checkpoint(directory, to_pytorch_layout(params), hf_cfg.to_dict())
    hf_reads_back(model, directory, params)
    mask = (np.arange(10)[None] < LENGTHS[:, None]).astype(np.int32)
    hf_fn = jax.jit(lambda p: model(input_ids=IDS, attention_mask=mask, params=p).logits)
    cfg, ours = load_llama(directory)
    dec = Decoder(cfg)
    v = {"params": ours}

    @jax.jit
    def full(embeds, lengths):
        """Full causal recomputation: logits [B, S, V] of right-padded sequences."""
        positions = jnp.broadcast_to(jnp.arange(embeds.shape[1]), embeds.shape[:2])
        return dec.apply(v, embeds, positions, None, lengths)[0]

    embed = jax.jit(lambda ids: dec.apply(v, ids, method=Decoder.embed))
    # every full pass is padded to SIZE tokens: one compilation
    full32 = lambda ids, lengths: full(embed(_pad(ids, SIZE)), np.asarray(lengths, np.int32))
    return types.SimpleNamespace(dir=directory, hf_cfg=hf_cfg, params=params, cfg=cfg,
                                 ours=ours, dec=dec, hf_fn=hf_fn, hf=hf_fn(params), full=full,
                                 embed=embed, full32=full32)


def test_config_from_checkpoint(llama):
    cfg = llama.cfg
    assert (cfg.vocab_size, cfg.width, cfg.depth, cfg.heads, cfg.kv_heads, cfg.mlp_dim) == \
        (101, 32, 2, 4, 2, 64)
    assert cfg.rms_eps == 1e-5 and not cfg.tie_embeddings and cfg.eos_token_id == 2
    assert llama.ours["layers"]["attn"]["key"]["kernel"].shape == (2, 32, 2, 8)


def test_logits_match_hf(llama):
    logits = llama.full32(IDS, LENGTHS)
    hf = np.asarray(llama.hf)
    np.testing.assert_allclose(logits[0, :10], hf[0], atol=ATOL)
    np.testing.assert_allclose(logits[1, :8], hf[1, :8], atol=ATOL)   # valid positions


@pytest.mark.parametrize("kv_block", [128, 4])
def test_kv_cache_chunks_equal_full_pass(llama, kv_block, monkeypatch):
    """Prefill, multi-token appends and single steps, rows at different lengths; read as one
    block of keys and as blocks of 4 slots."""
    monkeypatch.setattr(decoder, "KV_BLOCK", kv_block)
    full = np.asarray(llama.full32(IDS, LENGTHS))
    dec, v = llama.dec, {"params": llama.ours}
    call = jax.jit(lambda e, pos, c, n: dec.apply(v, e, pos, c, n))
    cache = init_cache(llama.cfg, batch=2, max_len=16)
    # (chunk width, new tokens of row 0, of row 1)
    done = np.zeros(2, int)
    for width, n0, n1 in [(6, 6, 3), (1, 1, 1), (3, 3, 3), (1, 0, 1)]:
        n = np.array([n0, n1])
        chunk = np.zeros((2, width), np.int32)
        for b in range(2):
            chunk[b, :n[b]] = IDS[b, done[b]:done[b] + n[b]]
        positions = np.asarray(cache["lengths"])[:, None] + np.arange(width)[None]
        logits, cache = call(llama.embed(chunk), positions, cache, n)
        for b in range(2):
            np.testing.assert_allclose(logits[b, :n[b]], full[b, done[b]:done[b] + n[b]],
                                       atol=ATOL)
        done += n
        np.testing.assert_array_equal(cache["lengths"], done)
    assert list(done) == [10, 8]


def _dense_attention(q, k, v, query_slot):
    """Softmax attention of q [B, L, H, Dh] over every slot <= query_slot [B, L] of k, v
    [B, S, K, Dh] (heads k*G .. k*G+G-1 share kv head k), in float64 numpy."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    G = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, G, axis=2), np.repeat(v, G, axis=2)
    scores = np.einsum("blhd,bshd->bhls", q, k) / np.sqrt(q.shape[-1])
    visible = np.arange(k.shape[1])[None, None] <= np.asarray(query_slot)[:, :, None]
    scores = np.where(visible[:, None], scores, -np.inf)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bhls,bshd->blhd", probs, v)


@pytest.mark.parametrize("slots", [14, 16])
def test_cached_attention_in_blocks(slots, monkeypatch):
    """Blocks of 4 slots over a cache of 14 (the last block overlaps) or 16 slots, rows
    filled to different lengths, grouped-query heads: the output equals dense attention over
    the filled slots, the new keys land in this layer's slots only, and the gradient equals
    the dense form's."""
    monkeypatch.setattr(decoder, "KV_BLOCK", 4)
    rng = np.random.default_rng(0)
    B, Lq, H, K, Dh, depth = 3, 2, 4, 2, 8, 2
    q = rng.normal(size=(B, Lq, H, Dh)).astype(np.float32)
    k, v = (rng.normal(size=(B, Lq, K, Dh)).astype(np.float32) for _ in range(2))
    stack_k, stack_v = (rng.normal(size=(depth, B, slots, K, Dh)).astype(np.float32)
                        for _ in range(2))
    start = np.array([0, 5, 11], np.int32)                 # row 2 writes slots 11-12
    query_slot = start[:, None] + np.arange(Lq)[None]
    cache = LayerCache(jnp.asarray(stack_k), jnp.asarray(stack_v), jnp.asarray(1))
    o, new = jax.jit(decoder.cached_attention)(q, k, v, cache, start)
    want_k, want_v = stack_k.copy(), stack_v.copy()
    for b in range(B):
        want_k[1, b, start[b]:start[b] + Lq] = k[b]
        want_v[1, b, start[b]:start[b] + Lq] = v[b]
    np.testing.assert_array_equal(new.k, want_k)
    np.testing.assert_array_equal(new.v, want_v)
    np.testing.assert_allclose(o, _dense_attention(q, want_k[1], want_v[1], query_slot),
                               atol=1e-5)

    def blocked(q, k, v):
        return (decoder.cached_attention(q, k, v, cache, start)[0] ** 2).sum()

    def dense(q, k, v):      # the same function in one masked softmax (jax, differentiable)
        keys = cache.k[1].at[np.arange(B)[:, None], query_slot].set(k)
        values = cache.v[1].at[np.arange(B)[:, None], query_slot].set(v)
        visible = jnp.arange(slots)[None, None] <= query_slot[:, :, None]
        return (decoder.attention(q, keys, values, visible[:, None],
                                  implementation="xla") ** 2).sum()

    for got, want in zip(jax.grad(blocked, (0, 1, 2))(q, k, v),
                         jax.grad(dense, (0, 1, 2))(q, k, v)):
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_cache_capacity_buckets(monkeypatch):
    monkeypatch.setattr(decoder, "KV_BLOCK", 8)
    assert [cache_slots(n) for n in (1, 8, 9, 16, 17)] == [1, 8, 16, 16, 24]


def _reference(llama, rows: list[list[int]], steps: int, temperature=0.0, rng=None):
    """Tokens by recomputing the whole sequence each step (no cache)."""
    eos, pad = llama.cfg.eos_token_id, llama.cfg.pad_token_id
    seqs = [list(r) for r in rows]
    out = [[] for _ in rows]
    done = [False] * len(rows)
    for i in range(steps):
        lengths = np.array([len(s) for s in seqs], np.int32)
        logits = llama.full32(seqs, lengths)
        last = logits[np.arange(len(rows)), lengths - 1]
        if temperature == 0.0:
            tokens = np.asarray(jnp.argmax(last, -1))
        else:
            tokens = np.asarray(jax.random.categorical(jax.random.fold_in(rng, i),
                                                       last / temperature, axis=-1))
        for b in range(len(rows)):
            if done[b]:
                out[b].append(pad)
                continue
            out[b].append(int(tokens[b]))
            seqs[b].append(int(tokens[b]))
            done[b] = int(tokens[b]) == eos
    return out, seqs


SIZE = 32


def _pad(rows, width):
    ids = np.zeros((len(rows), width), np.int32)
    for b, r in enumerate(rows):
        ids[b, :len(r)] = r
    return ids


def test_generate_equals_full_recomputation_over_two_turns(llama):
    cfg = llama.cfg
    turn1 = [[1, 17, 33, 8, 90], [1, 55, 21]]
    ref1, seqs = _reference(llama, turn1, steps=6)
    cache = init_cache(cfg, batch=2, max_len=SIZE)
    tokens, cache = generate(llama.ours, cfg, llama.embed(_pad(turn1, 5)), np.array([5, 3]),
                             6, jax.random.key(0), cache=cache)
    assert tokens.shape == (2, 6) and tokens.dtype == jnp.int32
    np.testing.assert_array_equal(tokens, ref1)
    np.testing.assert_array_equal(cache["lengths"], [len(s) for s in seqs])
    # turn 2 appended to the same cache, sampled at temperature 0.7, given as a mask
    turn2 = [[40, 41, 42], [43, 44]]
    rng = jax.random.key(7)
    ref2, seqs2 = _reference(llama, [s + t for s, t in zip(seqs, turn2)], steps=6,
                             temperature=0.7, rng=rng)
    mask = (_pad(turn2, 5) > 0).astype(np.int32)       # same shapes: no recompilation
    tokens2, cache = generate(llama.ours, cfg, llama.embed(_pad(turn2, 5)), mask, 6, rng,
                              cache=cache, temperature=0.7)
    np.testing.assert_array_equal(tokens2, ref2)
    np.testing.assert_array_equal(cache["lengths"], [len(s) for s in seqs2])


def test_tied_embeddings_checkpoint(llama, tmp_path):
    """A tied checkpoint has no lm_head: logits use the embedding matrix."""
    state = to_pytorch_layout(llama.params)
    del state["lm_head.weight"]
    config = dict(llama.hf_cfg.to_dict(), tie_word_embeddings=True)
    cfg, params = load_llama(write_checkpoint(tmp_path / "tied", state, config))
    assert cfg.tie_embeddings and "lm_head" not in params
    hf_params = {"model": llama.params["model"],
                 "lm_head": {"kernel": llama.params["model"]["embed_tokens"]["embedding"].T}}
    dec = Decoder(cfg)

    @jax.jit
    def logits(p):
        embeds = dec.apply({"params": p}, IDS, method=Decoder.embed)
        return dec.apply({"params": p}, embeds, jnp.arange(10)[None], None, LENGTHS)[0]

    np.testing.assert_allclose(logits(params)[0], llama.hf_fn(hf_params)[0], atol=ATOL)


def test_flax_msgpack_checkpoint(llama, tmp_path):
    """HF's Flax format (flax_model.msgpack, Flax names and layouts) loads to the same params."""
    from flax import serialization

    directory = tmp_path / "flax"
    directory.mkdir()
    (directory / "flax_model.msgpack").write_bytes(serialization.msgpack_serialize(llama.params))
    (directory / "config.json").write_text(json.dumps(llama.hf_cfg.to_dict()))
    cfg, params = load_llama(directory)
    assert cfg == llama.cfg
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(llama.ours)):
        np.testing.assert_array_equal(a, b)


def test_remat_and_bfloat16(llama):
    embeds = llama.embed(IDS)
    positions = jnp.arange(10)[None]

    def loss(cfg, p):
        return Decoder(cfg).apply({"params": p}, embeds, positions)[0].mean()

    # remat "full" recomputes each layer's forward in the backward pass: more matmuls in the
    # gradient; "dots" keeps the products and recomputes only the elementwise work (traced
    # only, no compilation)
    def gradient_jaxpr(**remat):
        cfg = dataclasses.replace(llama.cfg, **remat)
        return str(jax.make_jaxpr(jax.grad(lambda p: loss(cfg, p)))(llama.ours))

    plain = gradient_jaxpr().count("dot_general")
    assert gradient_jaxpr(remat=True).count("dot_general") > plain
    assert gradient_jaxpr(remat=True, remat_policy="dots").count("dot_general") == plain
    expected = jax.grad(lambda p: loss(llama.cfg, p))(llama.ours)
    for policy in ("full", "dots"):                   # the same gradient either way
        cfg = dataclasses.replace(llama.cfg, remat=True, remat_policy=policy)
        got = jax.grad(lambda p: loss(cfg, p))(llama.ours)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="remat_policy must be one of"):
        dataclasses.replace(llama.cfg, remat_policy="some")
    bf16 = dataclasses.replace(llama.cfg, dtype="bfloat16")
    logits, _ = jax.jit(lambda p: Decoder(bf16).apply({"params": p}, embeds, positions))(
        llama.ours)
    assert logits.dtype == jnp.float32
    np.testing.assert_allclose(logits[0], np.asarray(llama.hf)[0], atol=0.15)


def test_bad_llama_directories(llama, tmp_path):
    state = to_pytorch_layout(llama.params)
    config = llama.hf_cfg.to_dict()
    with pytest.raises(CheckpointError, match="missing config.json"):
        load_llama(tmp_path / "nothing")
    (tmp_path / "nofile").mkdir()
    (tmp_path / "nofile" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_llama(tmp_path / "nofile")
    bad = dict(state)
    bad["model.layers.1.mlp.up_proj.weight"] = np.zeros((65, 32), np.float32)
    with pytest.raises(CheckpointError, match=r"differ in shape: .*layers.0.mlp.up_proj.weight "
                       r"\(64, 32\), model.layers.1.mlp.up_proj.weight \(65, 32\)"):
        load_llama(write_checkpoint(tmp_path / "layers", bad, config))
    bad["model.layers.0.mlp.up_proj.weight"] = np.zeros((65, 32), np.float32)
    with pytest.raises(CheckpointError, match=r"layers/mlp/up/kernel: checkpoint \(2, 32, 65\), "
                       r"model \(2, 32, 64\)"):
        load_llama(write_checkpoint(tmp_path / "shape", bad, config))
    bad = dict(state)
    del bad["model.layers.0.self_attn.k_proj.weight"]
    bad["model.layers.0.self_attn.k_norm.weight"] = np.ones(8, np.float32)
    with pytest.raises(CheckpointError) as err:
        load_llama(write_checkpoint(tmp_path / "keys", bad, config))
    assert "missing keys (1): model.layers.0.self_attn.k_proj.weight" in str(err.value)
    assert "unknown keys (1): model.layers.0.self_attn.k_norm.weight" in str(err.value)
    with pytest.raises(CheckpointError, match="unknown architecture.*gpt2"):
        load_llama(write_checkpoint(tmp_path / "arch", state,
                                    {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(CheckpointError, match="rope_scaling"):
        load_llama(write_checkpoint(tmp_path / "rope", state, dict(
            config, rope_scaling={"rope_type": "llama3", "factor": 8.0})))
