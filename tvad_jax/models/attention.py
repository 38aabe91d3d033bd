"""The attention every model calls: one entry point, the fastest form each platform has.

    o = attention(q, k, v, mask=None, is_causal=False, key_lengths=None)
    # q [B, T, N, H]; k, v [B, S, K, H] with N a multiple of K (grouped-query attention);
    # mask bool, broadcastable to [B, N, T, S] (True = attend); key_lengths [B] valid keys
    # -> o [B, T, N, H] in q's dtype

Implementations (`implementation=`, or the process default `set_default`):

* "einsum": scores, a float32 softmax and the weighted sum as two einsums with the heads
  axis ahead of the sequence axes, so that neither product transposes the score matrix. On
  this project's 2-core CPU it runs the shipped ViT's joint attention (8 tubelets x 145
  tokens, 4 heads of 32) 2.2x faster forward and 1.6x faster forward + backward than the XLA
  path of `jax.nn.dot_product_attention` (`benchmarks/bench_attention.py`).
* "cudnn": `jax.nn.dot_product_attention(implementation="cudnn")`, the fused flash kernel
  (GPU; half-precision inputs, a head size that is a multiple of 8 up to 128, even lengths
  for a gradient; a mask goes to it at full length [B|1, N|1, T, S]).
* "pallas": the Pallas TPU flash-attention kernels (`jax.experimental.pallas.ops.tpu.
  flash_attention`, forward and backward; causal blocks above the diagonal skipped). Lengths
  are padded to whole tiles of `PALLAS_BLOCK`; padding, key lengths and a keys-only mask
  become key segment ids, any other mask an additive bias [B, N, T, S] (materialized, as the
  kernel takes it); grouped key/value heads are repeated. Off a TPU it runs only under Pallas'
  TPU interpreter (`jax.experimental.pallas.tpu.force_tpu_interpret_mode()`, as the tests
  check it). Named only: no TPU has run it in this project yet, and the kernel has no rule
  for splitting itself across a sharded mesh (XLA would gather its inputs), so "auto" does
  not pick it.
* "xla": `jax.nn.dot_product_attention`'s portable reference path.

"auto" (the default) picks cudnn on a GPU where its constraints hold, xla on a TPU and
einsum elsewhere. Masked scores take the same large negative value as jax's, so a row with
no visible key averages all values, as there; in causal self-attention longer than
`CAUSAL_BLOCK` (computed in blocks of queries) such a row averages the values of the keys
its block reads instead, and with pallas a row whose keys are all masked by key lengths or
a keys-only mask averages the values of its padded key tiles, the padding as zeros.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("auto", "einsum", "xla", "cudnn", "pallas")
# "einsum" runs blocks of ROW_BLOCK query rows (`_blocked_rows`) once a head's float32 score
# matrix would pass BLOCKED_ABOVE elements (4 MiB): on this project's CPU the shipped ViT's
# joint attention (1160 x 1160 per head) runs 1.4x faster forward in blocks of 128, a 512-token
# causal prefill (1 MiB) gains nothing (benchmarks/bench_attention.py).
ROW_BLOCK = 128
BLOCKED_ABOVE = 1 << 20
# Causal self-attention longer than CAUSAL_BLOCK runs in blocks of that many queries, block i
# over keys [0, (i + 1) CAUSAL_BLOCK) only: at 512 tokens 5/8 of the score matrix.
CAUSAL_BLOCK = 128
# "pallas": query and key tiles of the TPU kernels (their default); sequences are padded to a
# multiple of it.
PALLAS_BLOCK = 128
_default = "auto"


def set_default(implementation: str) -> None:
    """The implementation `attention` uses when a call names none (process-wide)."""
    global _default
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation {implementation!r}: expected one of "
                         f"{', '.join(IMPLEMENTATIONS)}")
    _default = implementation


def resolve(implementation: str, q: jax.Array, k: jax.Array) -> str:
    """The concrete implementation "auto" stands for, for queries q and keys k on this
    backend."""
    if implementation != "auto":
        return implementation
    backend = jax.default_backend()
    if backend == "gpu" and _cudnn_fits(q, k):
        return "cudnn"
    return "xla" if backend in ("gpu", "tpu") else "einsum"


def _cudnn_fits(q: jax.Array, k: jax.Array) -> bool:
    """Half precision, a head size that is a multiple of 8 up to 128, and even query and key
    lengths: on an H200 (jax 0.11.2) cuDNN ran ViT-L's 577 tokens forward but refused their
    gradient, and "auto" cannot know whether a gradient will be taken."""
    head = q.shape[-1]
    return (q.dtype in (jnp.bfloat16, jnp.float16) and head % 8 == 0 and head <= 128
            and q.shape[1] % 2 == 0 and k.shape[1] % 2 == 0)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None, *,
              is_causal: bool = False, key_lengths: jax.Array | None = None,
              implementation: str | None = None) -> jax.Array:
    """Scaled dot-product attention (see the module docstring for shapes)."""
    chosen = resolve(implementation or _default, q, k)
    if chosen == "einsum":
        mask = _combined_mask(q, k, mask, is_causal, key_lengths)
        causal = is_causal and q.shape[1] == k.shape[1] > CAUSAL_BLOCK
        return _einsum_attention(q, k, v, mask, ROW_BLOCK, CAUSAL_BLOCK if causal else None)
    if chosen == "pallas":
        return _pallas_attention(q, k, v, mask, is_causal, key_lengths)
    if chosen not in ("xla", "cudnn"):
        raise ValueError(f"attention implementation {chosen!r}: expected one of "
                         f"{', '.join(IMPLEMENTATIONS)}")
    if chosen == "cudnn" and mask is not None:   # cuDNN refuses a key-only [B, 1, 1, S]
        mask = _full_length_mask(mask, q.shape[1], k.shape[1])
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=is_causal,
                                        key_value_seq_lengths=key_lengths,
                                        implementation=chosen)


def _pallas_attention(q, k, v, mask, is_causal: bool, key_lengths) -> jax.Array:
    """The TPU flash kernel on [B, N, T, H] (see the module docstring)."""
    # Deferred: Pallas' TPU modules take ~0.2 s to import, and only this route needs them.
    from jax.experimental.pallas.ops.tpu import flash_attention as tpu_flash
    B, T, N, H = q.shape
    S, K = k.shape[1], k.shape[2]
    if N % K:
        raise ValueError(f"{N} query heads are not a multiple of {K} key/value heads")
    Tp, Sp = _pallas_length(T), _pallas_length(S)

    def heads_first(x, length, repeat):           # [B, L, heads, H] -> [B, N, Lp, H]
        x = jnp.pad(x, ((0, 0), (0, length - x.shape[1]), (0, 0), (0, 0)))
        return jnp.repeat(x, repeat, axis=2).transpose(0, 2, 1, 3)

    mask = None if mask is None else _four_d(mask)
    keys_only = mask is not None and mask.shape[1] == mask.shape[2] == 1
    segments = None
    if Sp > S or key_lengths is not None or keys_only:
        valid = jnp.broadcast_to(jnp.arange(Sp) < S, (B, Sp))                     # B, Sp
        if key_lengths is not None:
            valid = valid & (jnp.arange(Sp)[None] < key_lengths[:, None])
        if keys_only:
            valid = valid & jnp.pad(jnp.broadcast_to(mask[:, 0, 0], (B, S)),
                                    ((0, 0), (0, Sp - S)))
        segments = tpu_flash.SegmentIds(q=jnp.ones((B, Tp), jnp.int32),
                                        kv=valid.astype(jnp.int32))
    bias = None
    if mask is not None and not keys_only:
        full = jnp.broadcast_to(mask, (B, N, T, S))
        bias = jnp.pad(jnp.where(full, 0.0, tpu_flash.DEFAULT_MASK_VALUE).astype(jnp.float32),
                       ((0, 0), (0, 0), (0, Tp - T), (0, Sp - S)))
    tile = PALLAS_BLOCK
    blocks = tpu_flash.BlockSizes(
        block_q=tile, block_k_major=tile, block_k=tile, block_b=1,
        block_q_major_dkv=tile, block_k_major_dkv=tile, block_k_dkv=tile, block_q_dkv=tile,
        block_k_major_dq=tile, block_k_dq=tile, block_q_dq=tile)
    out = tpu_flash.flash_attention(
        heads_first(q, Tp, 1), heads_first(k, Sp, N // K), heads_first(v, Sp, N // K),
        bias, segments, causal=is_causal, sm_scale=1.0 / math.sqrt(H), block_sizes=blocks)
    return out[:, :, :T].transpose(0, 2, 1, 3).astype(q.dtype)                 # B, T, N, H


def _pallas_length(length: int) -> int:
    """A sequence length in whole tiles of PALLAS_BLOCK (the kernel's backward pass broadcasts
    its row statistics across 128 lanes, so a shorter tile fails there)."""
    return -(-length // PALLAS_BLOCK) * PALLAS_BLOCK


def _four_d(mask: jax.Array) -> jax.Array:
    """A mask broadcastable to [B, N, T, S] with its leading axes made explicit (size 1)."""
    return mask.reshape((1,) * (4 - mask.ndim) + mask.shape)


def _full_length_mask(mask, T: int, S: int) -> jax.Array:
    """mask broadcast to [B|1, N|1, T, S]."""
    mask = _four_d(mask)
    return jnp.broadcast_to(mask, mask.shape[:2] + (T, S))


def _combined_mask(q, k, mask, is_causal, key_lengths) -> jax.Array | None:
    """One bool mask [B|1, N|1, T, S] from the three ways of giving one (None: no mask)."""
    T, S = q.shape[1], k.shape[1]
    parts = [] if mask is None else [_four_d(mask)]
    if is_causal:
        parts.append((jnp.arange(S)[None, :] <= jnp.arange(T)[:, None])[None, None])
    if key_lengths is not None:
        parts.append(jnp.arange(S)[None, None, None, :] < key_lengths[:, None, None, None])
    if not parts:
        return None
    combined = parts[0]
    for part in parts[1:]:
        combined = combined & part
    return combined


def _einsum_attention(q, k, v, mask, row_block: int, causal_block: int | None = None
                      ) -> jax.Array:
    """The plain form with the heads (and a query group) ahead of the sequence axes, so that
    both products write their natural layout and the score matrix is never transposed; a
    large score matrix goes in blocks of `row_block` query rows (`_blocked_rows`). With
    `causal_block` (causal self-attention, mask [b, N|1, T, T] with the causal part in it)
    the queries go in blocks of that many, each over the keys up to its last query, so the
    blocks above the diagonal are never computed; q, k and v are laid out once for all of
    them."""
    B, T, N, H = q.shape
    S, K = k.shape[1], k.shape[2]
    if N % K:
        raise ValueError(f"{N} query heads are not a multiple of {K} key/value heads")
    G = N // K
    q = (q * (1.0 / math.sqrt(H))).reshape(B, T, K, G, H).transpose(0, 2, 3, 1, 4)  # B K G T H
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)                        # B, K, S, H
    mask = None if mask is None else _grouped_mask(mask, K, G)
    spans = ([(lo, min(lo + causal_block, T)) for lo in range(0, T, causal_block)]
             if causal_block else [(0, T)])
    out = []
    for lo, hi in spans:
        keys = hi if causal_block else S
        rows = q[:, :, :, lo:hi].reshape(B, K, G * (hi - lo), H)   # a group's queries in a row
        block = _attend_rows(rows, k[:, :, :keys], v[:, :, :keys],
                             _row_mask(mask, lo, hi, keys, G), row_block)
        out.append(block.reshape(B, K, G, hi - lo, H))
    out = out[0] if len(out) == 1 else jnp.concatenate(out, axis=3)              # B K G T H
    return out.transpose(0, 3, 1, 2, 4).reshape(B, T, N, H).astype(q.dtype)


def _grouped_mask(mask: jax.Array, K: int, G: int) -> jax.Array:
    """A bool mask [b, N|1, T|1, S] as [b, K|1, G|1, T|1, S]: query head n = (kv head, group)."""
    b, heads, T, S = mask.shape
    if heads == 1:
        return mask.reshape(b, 1, 1, T, S)
    if heads != K * G:
        raise ValueError(f"a mask over {heads} heads for {K * G} query heads")
    return mask.reshape(b, K, G, T, S)


def _row_mask(mask: jax.Array | None, lo: int, hi: int, keys: int, G: int
              ) -> jax.Array | None:
    """The part of a grouped mask [b, K|1, G|1, T|1, S] for queries lo..hi-1 and the first
    `keys` keys, in the rows' layout [b, K|1, G (hi - lo) | 1, keys] (row = group, query)."""
    if mask is None:
        return None
    b, kv, groups, T, _ = mask.shape
    part = mask[:, :, :, lo:hi, :keys] if T > 1 else mask[..., :keys]
    if groups == 1 and (T == 1 or G == 1):          # one row for all, or one per query
        return part.reshape(b, kv, part.shape[3], keys)
    part = jnp.broadcast_to(part, (b, kv, G, hi - lo, keys))
    return part.reshape(b, kv, G * (hi - lo), keys)


def _attend_rows(q, k, v, mask, row_block: int) -> jax.Array:
    """`_rows`, in blocks of `row_block` rows (`_blocked_rows`) once a head's score matrix
    would pass BLOCKED_ABOVE elements."""
    R, S = q.shape[2], k.shape[2]
    if R * S > BLOCKED_ABOVE and R > row_block:
        return _blocked_rows(q, k, v, mask, row_block)
    return _rows(q, k, v, mask)


@jax.custom_vjp
def _rows(q, k, v, mask) -> jax.Array:
    """Softmax attention of query rows q [B, K, R, H] (already scaled) over k, v [B, K, S, H];
    mask [b, K|1, R|1, S] or None -> [B, K, R, H].

    Differentiated as flash attention is: the backward pass recomputes the probabilities from
    q, k and the rows' log-sum-exp instead of keeping the [R, S] matrix of every layer alive
    until the backward pass (on this CPU the shipped decoder's gradient spent ~10% of its
    time writing and reading those saved matrices)."""
    return _rows_forward(q, k, v, mask)[0]


def _scores(q, k, mask) -> jax.Array:
    scores = jnp.einsum("bkqh,bksh->bkqs", q, k, preferred_element_type=jnp.float32)
    return scores if mask is None else jnp.where(mask, scores, _large_negative())


def _rows_forward(q, k, v, mask):
    scores = _scores(q, k, mask)
    peak = scores.max(axis=-1, keepdims=True)
    weights = jnp.exp(scores - peak)
    total = weights.sum(axis=-1, keepdims=True)
    out = jnp.einsum("bkqs,bksh->bkqh", (weights / total).astype(v.dtype), v)
    return out, (q, k, v, mask, out, peak + jnp.log(total))


def _rows_backward(residuals, g):
    q, k, v, mask, out, log_total = residuals
    probs = jnp.exp(_scores(q, k, mask) - log_total)                     # B, K, R, S f32
    dv = jnp.einsum("bkqs,bkqh->bksh", probs.astype(v.dtype), g)
    dprobs = jnp.einsum("bkqh,bksh->bkqs", g, v, preferred_element_type=jnp.float32)
    row_dot = jnp.sum(g.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
    dscores = probs * (dprobs - row_dot)
    dq = jnp.einsum("bkqs,bksh->bkqh", dscores.astype(q.dtype), k)
    dk = jnp.einsum("bkqs,bkqh->bksh", dscores.astype(k.dtype), q)
    return dq, dk, dv, None


_rows.defvjp(_rows_forward, _rows_backward)


def _blocked_rows(q, k, v, mask, block: int) -> jax.Array:
    """`_rows` over blocks of `block` query rows under `lax.map`: each block's scores stay in
    cache instead of one [R, S] matrix per head going through memory (every key per block,
    so no online softmax is needed). Rows are padded to whole blocks and dropped after."""
    B, K, R, H = q.shape
    n = -(-R // block)
    pad = n * block - R

    def split(x):                                     # [..., R, X] -> [n, ..., block, X]
        x = jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, pad), (0, 0)])
        x = x.reshape(x.shape[:-2] + (n, block, x.shape[-1]))
        return jnp.moveaxis(x, -3, 0)

    per_row_mask = mask is not None and mask.shape[2] > 1
    blocks = (split(q), split(mask) if per_row_mask else None)
    out = jax.lax.map(lambda qm: _rows(qm[0], k, v, qm[1] if per_row_mask else mask), blocks)
    out = jnp.moveaxis(out, 0, -3).reshape(B, K, n * block, H)    # B, K, n block, H
    return out[:, :, :R]


def _large_negative() -> jax.Array:
    """jax.nn.dot_product_attention's value for masked float32 scores."""
    return jnp.asarray(-0.7 * jnp.finfo(jnp.float32).max, jnp.float32)
