"""Jitted greedy / temperature decoding with the explicit KV cache of `decoder.py`.

    tokens, cache = generate(params, cfg, prompt_embeds, lengths, max_new_tokens=32, rng=key)
    # next dialogue turn: the cache holds turn 1's prompt and answer
    tokens2, cache = generate(params, cfg, turn2_embeds, lengths2, 32, key2, cache=cache)

Shapes are fixed: the prompt is [B, L, D] (right-padded, `lengths` [B] real tokens each, or a
[B, L] 0/1 mask of prefix ones), the answer [B, max_new_tokens]. One prefill call writes the
prompt into the cache (the vocabulary projection runs for each row's last prompt token only),
then a `lax.while_loop` samples a token from the last logits and feeds it back, up to
max_new_tokens times (it stops once every row has emitted EOS), so on return the cache holds
prompt + every generated token (up to and including EOS) and can take the next turn
directly. After a row emits `cfg.eos_token_id` its remaining tokens are `cfg.pad_token_id`
and its cache length stops growing. Each step costs what the cache holds, not its capacity
(`decoder.cached_attention`).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from tvad_jax.models.configs import DecoderConfig
from tvad_jax.models.decoder import Decoder, init_cache


def _lengths(prompt_embeds, mask_or_lengths):
    B, Lp = prompt_embeds.shape[:2]
    if mask_or_lengths is None:
        return jnp.full((B,), Lp, jnp.int32)
    x = jnp.asarray(mask_or_lengths)
    return (x.astype(jnp.int32).sum(-1) if x.ndim == 2 else x.astype(jnp.int32))


def sample(logits: jax.Array, rng: jax.Array, temperature) -> jax.Array:
    """logits [B, V] -> tokens [B]: argmax when temperature <= 0, else a sample of
    softmax(logits / temperature). `temperature` may be traced (no recompilation)."""
    temperature = jnp.asarray(temperature, jnp.float32)
    greedy = jnp.argmax(logits, axis=-1)
    sampled = jax.random.categorical(rng, logits / jnp.maximum(temperature, 1e-6), axis=-1)
    return jnp.where(temperature > 0, sampled, greedy).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("cfg", "max_new_tokens", "cache_len", "decoder"))
def generate(params, cfg: DecoderConfig, prompt_embeds: jax.Array, prompt_mask_or_lengths,
             max_new_tokens: int, rng: jax.Array, cache: dict | None = None,
             temperature: float = 0.0, cache_len: int | None = None,
             decoder: Decoder | None = None, positions: jax.Array | None = None,
             delta: jax.Array | int = 0):
    """Decode `max_new_tokens` tokens after the prompt.

    Args:
      params: `Decoder` params (e.g. `backbone_params["decoder"]`).
      cfg: the `DecoderConfig` (static).
      prompt_embeds: [B, L, D] input embeddings (visual tokens, prompts, text embeddings).
      prompt_mask_or_lengths: [B] real prompt tokens per row, or a [B, L] right-padded 0/1
        mask, or None (all L real).
      max_new_tokens: number of tokens to generate (static).
      rng: PRNG key (used when temperature > 0; step i uses fold_in(rng, i)).
      cache: a cache to continue (a previous turn); None starts an empty one of
        `cache_len` slots (default L + max_new_tokens). Its free slots must fit L +
        max_new_tokens.
      temperature: 0 for greedy, else the sampling temperature (traced: changing it does not
        recompile).
      decoder: the decoder module (static; default `Decoder(cfg)`, e.g. a Qwen2 decoder).
      positions: the prompt's positions as the decoder takes them (e.g. M-RoPE [3, B, L]);
        default: cache slot + delta.
      delta: [B] or a scalar: a token at cache slot p has position p + delta (M-RoPE's
        rope_deltas; 0 for plain RoPE).
    Returns:
      tokens [B, max_new_tokens] int32 (pad after EOS), and the cache.
    """
    model = Decoder(cfg) if decoder is None else decoder
    variables = {"params": params}
    B, Lp = prompt_embeds.shape[:2]
    lengths = _lengths(prompt_embeds, prompt_mask_or_lengths)
    if cache is None:
        cache = init_cache(cfg, B, cache_len or Lp + max_new_tokens)
    delta = jnp.broadcast_to(jnp.asarray(delta, jnp.int32), (B,))[:, None]
    if positions is None:
        positions = cache["lengths"][:, None] + jnp.arange(Lp)[None] + delta
    hidden, cache = model.apply(variables, prompt_embeds, positions, cache, lengths,
                                method="features")                      # [B, L, D]
    hidden = jnp.take_along_axis(hidden, jnp.maximum(lengths - 1, 0)[:, None, None], axis=1)
    last = model.apply(variables, hidden, method="logits")[:, 0]      # only where we sample
    eos = -1 if cfg.eos_token_id is None else cfg.eos_token_id

    def unfinished(carry):
        i, _, _, done, _ = carry
        return (i < max_new_tokens) & ~jnp.all(done)

    def step(carry):
        i, cache, last, done, tokens = carry
        token = sample(last, jax.random.fold_in(rng, i), temperature)
        token = jnp.where(done, cfg.pad_token_id, token)
        embeds = model.apply(variables, token[:, None], method=Decoder.embed)
        advance = jnp.where(done, 0, 1).astype(jnp.int32)
        logits, cache = model.apply(variables, embeds, cache["lengths"][:, None] + delta, cache,
                                    advance)
        return (i + 1, cache, logits[:, 0], done | (token == eos),
                tokens.at[:, i].set(token))

    # Stops once every row has emitted EOS (the rest of each row is padding either way).
    tokens = jnp.full((B, max_new_tokens), cfg.pad_token_id, jnp.int32)
    done = jnp.zeros((B,), bool)
    _, cache, _, _, tokens = jax.lax.while_loop(unfinished, step,
                                                (0, cache, last, done, tokens))
    return tokens, cache
