"""Llama-family causal decoder on input embeddings, with an explicit KV cache.

    dec = Decoder(cfg)
    embeds = dec.apply(v, ids, method=Decoder.embed)                 # [B, L, D]
    logits, _ = dec.apply(v, embeds, positions)                      # full causal pass
    cache = init_cache(cfg, batch=B, max_len=S)
    logits, cache = dec.apply(v, embeds, positions, cache, lengths)  # prefill / step / new turn

Letters: B batch, L new tokens, S cache slots, D width, H query heads, K kv heads, Dh head
size, V vocabulary.

The cache is a plain dict pytree: "k", "v" [depth, B, S, K, Dh] (compute dtype) and "lengths"
[B] int32, the number of filled slots per row. A call with a cache writes the L new tokens'
keys/values at slots [lengths_b, lengths_b + L) of row b, lets query i attend to slots
<= lengths_b + i, and advances lengths_b by `lengths[b]` (how many of the L tokens are real;
default L). Prefill, one-token decoding and appending a dialogue turn are all this one call.
Right-padded rows are fine: slots past a row's new length hold garbage that the next call
overwrites, and only the padded queries themselves can see it. Callers keep
lengths + L <= S (slot writes past S are clipped by XLA, silently).

A cached call costs what the cache holds, not what it could hold: the stacked cache is the
carry of the scan over layers (each layer writes its new slots in place), and attention runs
over blocks of `KV_BLOCK` slots up to the longest row's filled length with an online
softmax (`cached_attention`). `init_cache` rounds S up to whole blocks (capacity buckets),
so nearby capacities share one compiled program.

Positions (for RoPE) are explicit [B, L]; usually `cache["lengths"][:, None] + arange(L)`.

Unmerged LoRA (with dropout, for training): `lora=lora.decoder_lora(adapters, ...)` adds
dropout(x) A B to each layer's q and v (x its normed input, before RoPE); its leaves carry a
leading depth axis and are scanned with the layers. lora=None is the plain decoder.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from tvad_jax.models import layers as L
from tvad_jax.models.attention import attention
from tvad_jax.models.configs import REMAT_POLICIES, DecoderConfig, dtype_of
from tvad_jax.models.lora import lora_branch

# Cache slots per block of cached attention; also the capacity bucket of `init_cache`. On this
# project's CPU, greedy decoding with the shipped decoder (256-token prompt + 64, 1024 slots)
# takes 101 / 33 ms at batch 4 / 1 in blocks of 128, within 15% for blocks of 32 to 512.
KV_BLOCK = 128


def cache_slots(max_len: int) -> int:
    """The capacity `init_cache` allocates for max_len tokens: whole `KV_BLOCK`s beyond one."""
    return max_len if max_len <= KV_BLOCK else -(-max_len // KV_BLOCK) * KV_BLOCK


def init_cache(cfg: DecoderConfig, batch: int, max_len: int, dtype=None) -> dict:
    """An empty KV cache of `cache_slots(max_len)` slots: k, v [depth, B, S, K, Dh] zeros,
    lengths [B] zeros."""
    dtype = dtype_of(cfg.dtype) if dtype is None else dtype
    shape = (cfg.depth, batch, cache_slots(max_len), cfg.kv_heads, cfg.dim_per_head)
    return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype),
            "lengths": jnp.zeros((batch,), jnp.int32)}


class LayerCache(NamedTuple):
    """The stacked cache as one layer sees it: k, v [depth, B, S, K, Dh] and its index."""

    k: jax.Array
    v: jax.Array
    layer: jax.Array


def adapt_with_lora(y, x, lora, name, salt):
    """y [B, L, H|K, Dh] + the LoRA branch `name` of x [B, L, D] (one layer's slice of
    `lora.decoder_lora`), dropout keyed by fold_in(rng, salt)."""
    rng = jax.random.fold_in(lora["rng"], salt)
    return y + lora_branch(x, lora[name]["a"], lora[name]["b"], rng, lora["rate"])


def cached_attention(q, k, v, cache: LayerCache, start) -> tuple[jax.Array, LayerCache]:
    """Write k, v [B, L, K, Dh] into this layer's slots [start_b, start_b + L) of the cache
    (in place) and attend causally over the filled slots: -> (o [B, L, H, Dh], cache).

    The keys are read in blocks of `KV_BLOCK` slots, only as many as the longest row has
    filled, with an online softmax over the blocks (float32 statistics); a block past the
    filled length is skipped by `lax.cond`, so the call stays reverse-differentiable."""
    B, Lq, H, Dh = q.shape
    S, K = cache.k.shape[2], cache.k.shape[3]
    start = jnp.asarray(start, jnp.int32)
    G = H // K

    def write(stack, new):                     # stack [depth, B, S, K, Dh] <- new [B, L, K, Dh]
        new = new.astype(stack.dtype)[None, :, None]                 # 1, B, 1, L, K, Dh

        def row(b, stack):    # one in-place update per row (a batched scatter copies the cache)
            return jax.lax.dynamic_update_slice(stack, new[:, b], (cache.layer, b, start[b], 0, 0))

        return jax.lax.fori_loop(0, B, row, stack)

    cache = LayerCache(write(cache.k, k), write(cache.v, v), cache.layer)
    block = min(KV_BLOCK, S)
    blocks = -(-S // block)
    filled = jnp.max(start) + Lq                                       # slots to read
    q = (q * (1.0 / math.sqrt(Dh))).reshape(B, Lq, K, G, Dh)
    query_slot = start[:, None] + jnp.arange(Lq)[None]                  # B, L

    def read(stack, first):                                            # -> B, block, K, Dh
        return jax.lax.dynamic_slice(stack, (cache.layer, 0, first, 0, 0),
                                     (1, B, block, K, Dh))[0].astype(q.dtype)

    def update(j, carry):
        peak, total, acc = carry                        # B, K, G, L (twice); B, K, G, L, Dh
        first = jnp.minimum(j * block, S - block)       # the last block may overlap the one
        slots = first + jnp.arange(block)               # before it in a cache of odd size
        visible = (slots[None, None] <= query_slot[:, :, None]) & (slots >= j * block)
        scores = jnp.einsum("blkgh,bskh->bkgls", q, read(cache.k, first),
                            preferred_element_type=jnp.float32)
        scores = jnp.where(visible[:, None, None], scores, -jnp.inf)
        new_peak = jnp.maximum(peak, jax.lax.stop_gradient(scores.max(-1)))
        weights = jnp.exp(scores - new_peak[..., None])
        scale = jnp.exp(peak - new_peak)
        acc = acc * scale[..., None] + jnp.einsum(
            "bkgls,bskh->bkglh", weights, read(cache.v, first).astype(jnp.float32))
        return new_peak, total * scale + weights.sum(-1), acc

    def step(j, carry):
        return jax.lax.cond(j * block < filled, update, lambda j, c: c, j, carry)

    stats = jnp.full((B, K, G, Lq), -jnp.inf, jnp.float32)
    carry = (stats, jnp.zeros_like(stats), jnp.zeros((B, K, G, Lq, Dh), jnp.float32))
    _, total, acc = jax.lax.fori_loop(0, blocks, step, carry)
    o = (acc / total[..., None]).transpose(0, 3, 1, 2, 4).reshape(B, Lq, H, Dh)
    return o.astype(q.dtype), cache


class DecoderLayer(nn.Module):
    """One Llama block as a scan body: x = x + attn(norm(x)); x = x + mlp(norm(x)).

    Params: input_norm, attn (query/key/value/out, no biases), post_norm, mlp (gate/up/down).
    Call: carry (x [B, L, D], the stacked cache (k, v) or None), this layer's index,
    positions [B, L], start [B] (first slot written), key_lengths, lora (None or this layer's
    slice of `lora.decoder_lora`) -> (new carry, None). Subclasses override `attention`,
    whose kv is None or a `LayerCache`.
    """

    cfg: DecoderConfig

    def setup(self):
        cfg = self.cfg
        dtype = dtype_of(cfg.dtype)
        self.input_norm = L.RMSNorm(cfg.rms_eps, dtype)
        self.attn = L.Attention(cfg.heads, cfg.kv_heads, cfg.dim_per_head, cfg.width,
                                use_bias=False, dtype=dtype)
        self.post_norm = L.RMSNorm(cfg.rms_eps, dtype)
        self.mlp = L.GatedMLP(cfg.mlp_dim, dtype=dtype)

    def attention(self, x, kv, positions, start, key_lengths, lora):
        q, k, v = self.attn.qkv(x)
        if lora is not None:
            q, v = adapt_with_lora(q, x, lora, "query", 0), adapt_with_lora(v, x, lora, "value", 1)
        q = L.rope(q, positions, self.cfg.rope_theta)
        k = L.rope(k, positions, self.cfg.rope_theta)
        if kv is None:
            o = attention(q, k, v, is_causal=True, key_lengths=key_lengths)
            return self.attn.output(o), None
        o, kv = cached_attention(q, k, v, kv, start)
        return self.attn.output(o), kv

    def block(self, x, kv, positions, start, key_lengths, lora):
        x = L.constrain(x, ("batch", "length", "embed"))
        h, kv = self.attention(self.input_norm(x), kv, positions, start, key_lengths, lora)
        x = x + h
        x = x + self.mlp(self.post_norm(x))
        return L.constrain(x, ("batch", "length", "embed")), kv

    def __call__(self, carry, layer, positions, start, key_lengths, lora):
        x, stack = carry
        kv = None if stack is None else LayerCache(*stack, layer)
        block = (nn.remat(DecoderLayer.block, prevent_cse=False,
                          policy=REMAT_POLICIES[self.cfg.remat_policy])
                 if self.cfg.remat else DecoderLayer.block)
        x, kv = block(self, x, kv, positions, start, key_lengths, lora)
        return (x, None if kv is None else (kv.k, kv.v)), None


class Decoder(nn.Module):
    """Llama-family decoder taking input embeddings (see the module docstring).

    Params: embed [V, D], layers (scanned `DecoderLayer`s, leading axis depth), norm,
    lm_head/kernel [D, V] unless `cfg.tie_embeddings`.
    """

    cfg: DecoderConfig
    layer_class = DecoderLayer   # subclasses swap in their layer (e.g. Qwen2's attention)

    def setup(self):
        cfg = self.cfg
        self.embedding = self.param("embed", L.kernel_init(("vocab", "embed"), 0.02),
                                    (cfg.vocab_size, cfg.width), jnp.float32)
        self.layers = nn.scan(
            self.layer_class, variable_axes={"params": 0}, split_rngs={"params": True},
            in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, 0), length=cfg.depth,
            metadata_params={nn.PARTITION_NAME: None})(cfg, name="layers")
        self.norm = L.RMSNorm(cfg.rms_eps, self.dtype)
        if not cfg.tie_embeddings:
            self.lm_head = L.Dense(cfg.vocab_size, use_bias=False, dtype=self.dtype,
                                    kernel_init=L.kernel_init(("embed", "vocab")), name="lm_head")

    @property
    def dtype(self):
        return dtype_of(self.cfg.dtype)

    def embed(self, ids: jax.Array) -> jax.Array:
        """ids [B, L] int -> embeddings [B, L, D] (compute dtype)."""
        return jnp.take(self.embedding, ids, axis=0).astype(self.dtype)

    def features(self, embeds, positions, cache=None, lengths=None, lora=None):
        """Final-norm hidden states [B, L, D] and the updated cache (see `__call__`)."""
        B, Lq, _ = embeds.shape
        x = L.constrain(embeds.astype(self.dtype), ("batch", "length", "embed"))
        positions = self.layer_positions(positions, B, Lq)
        new_lengths = (jnp.full((B,), Lq, jnp.int32) if lengths is None
                       else jnp.asarray(lengths, jnp.int32))
        layers = jnp.arange(self.cfg.depth)
        if cache is None:
            key_lengths = None if lengths is None else new_lengths
            (x, _), _ = self.layers((x, None), layers, positions, jnp.zeros((B,), jnp.int32),
                                    key_lengths, lora)
            return self.norm(x), None
        start = cache["lengths"]
        (x, (k, v)), _ = self.layers((x, (cache["k"], cache["v"])), layers, positions, start,
                                     None, lora)
        return self.norm(x), {"k": k, "v": v, "lengths": start + new_lengths}

    def layer_positions(self, positions: jax.Array, B: int, Lq: int) -> jax.Array:
        """What the layers' rotary embedding takes: positions [B, L] int32 (subclasses with
        another position scheme override it)."""
        return jnp.broadcast_to(positions, (B, Lq)).astype(jnp.int32)

    def logits(self, h: jax.Array) -> jax.Array:
        """h [B, L, D] -> logits [B, L, V] float32."""
        if self.cfg.tie_embeddings:
            out = jnp.einsum("bld,vd->blv", h, self.embedding.astype(h.dtype))
        else:
            out = self.lm_head(h)
        return L.constrain(out.astype(jnp.float32), ("batch", "length", "vocab"))

    def __call__(self, embeds: jax.Array, positions: jax.Array, cache: dict | None = None,
                 lengths: jax.Array | None = None, lora: dict | None = None):
        """embeds [B, L, D], positions [B, L] -> (logits [B, L, V] float32, cache).

        Without a cache: causal attention over the L tokens; `lengths` [B] (optional) masks
        keys at index >= lengths[b] (right padding); returns cache None. With a cache: see the
        module docstring; `lengths` [B] = real new tokens per row (default L). `lora`: None
        or `lora.decoder_lora`'s output (unmerged q/v LoRA with dropout, see the module
        docstring).
        """
        h, cache = self.features(embeds, positions, cache, lengths, lora)
        return self.logits(h), cache
