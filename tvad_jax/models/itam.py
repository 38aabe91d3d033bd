"""Paper 003's Image-Text Alignment Module (ITAM): BLIP-2's Q-Former, its three training
losses and its image-grounded text generation (IGTG, the captioner of paper 003's TSGM).

    model = ITAM(cfg)
    params = init_params(cfg, rng)
    F_I = model.apply({"params": params}, vision, method=ITAM.image_tokens)      # [B, N_q, H_d]
    F_T = model.apply({"params": params}, ids, mask, method=ITAM.text_features)  # [B, S_l, H_d]
    loss, metrics = blip2_loss(model, params, vision, ids, mask, rng)
    ids = caption(model, params, vision, max_len=32)                             # [B, 32]

Shapes: B batch, S_d vision tokens of width V_d (the crop's backbone tokens H), N = N_q
learned queries, L text tokens (ids start with bos, BERT's [CLS] and BLIP-2's [DEC] alike),
D = H_d width, E ITC embedding size, V vocabulary.

One stack of layers serves every mode (BLIP-2, paper 003 Appendix C): self-attention (and its
weights) is shared by the query and text positions of [queries ; text], cross-attention to the
projected vision tokens applies to the query positions only, and query and text positions have
separate FFNs. The attention mask decides the mode (`attention_mask`):

* image path (`image_tokens`): queries alone; paper 003's F^I.
* text path (`text_features`): text alone, bidirectional; row 0 is the sentence feature F^T[0].
* "unimodal" (ITC, `itc_embeddings`): queries and text side by side, each seeing only its own
  modality: the image and the text path in one pass.
* "multimodal" (ITM, `itm_logits`): queries and text all see each other.
* "prefix_lm" (ITG, `lm_logits`): queries see queries, text token i sees every query and the
  text tokens <= i; an LM head on the text positions.

The text reads the vision tokens only through the queries of an earlier layer, so the
captioner needs depth >= 2.

Departures from BLIP-2: pre-LN layers with one final LayerNorm (the codebase's block; BERT is
post-LN), a plain Dense LM head, a LayerNorm + Dense projecting the vision tokens to H_d once
(BLIP-2's cross-attention reads the encoder width directly), a CLIP-style log logit scale.
"""
from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tvad_jax import config as config_lib
from tvad_jax.models import layers as L
from tvad_jax.models.attention import attention
from tvad_jax.models.losses import (lm_loss, logit_scale_factor, same_rows,
                                    similarity_contrastive_loss, unit_rows)

LAYER_NORM_EPS = 1e-5
MODES = ("unimodal", "multimodal", "prefix_lm")
BLOCKED = -1e9      # logit of a pair that sampling must not pick


@dataclasses.dataclass(frozen=True, kw_only=True)
class ITAMConfig:
    """Q-Former sizes; defaults are small (paper 003 / BLIP-2: depth 6, heads 12, N_q 32,
    H_d 768, a cross-attention in every layer for paper 003, every other one in BLIP-2)."""

    vision_width: int                 # V_d of the input tokens
    vocab_size: int
    bos_token_id: int
    eos_token_id: int
    pad_token_id: int
    width: int = 128                  # H_d
    depth: int = 2
    heads: int = 4
    mlp_dim: int = 512
    num_queries: int = 8              # N_q
    max_text_len: int = 32            # S_l
    embed_dim: int = 64               # ITC projection
    cross_attention_every: int = 1    # layer i cross-attends when i % this == 0

    def __post_init__(self):
        config_lib.check_at_least(self, 1, "vision_width", "vocab_size", "width", "heads",
                                  "mlp_dim", "num_queries", "max_text_len", "embed_dim",
                                  "cross_attention_every")
        config_lib.check_at_least(self, 2, "depth")           # see the module docstring
        config_lib.check_at_least(self, 0, "bos_token_id", "eos_token_id", "pad_token_id")
        if self.width % self.heads:
            raise ValueError(f"width: {self.width} is not a multiple of heads={self.heads}")
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(self, name) >= self.vocab_size:
                raise ValueError(f"{name}: {getattr(self, name)} is outside the vocabulary "
                                 f"of {self.vocab_size}")


def attention_mask(num_queries: int, text_mask: jax.Array, mode: str) -> jax.Array:
    """Who attends to whom over [N queries ; L text]: [B, 1, N + L, N + L] bool (True =
    attend).

    Padded text keys (text_mask 0) are hidden from every row. Beyond that, "multimodal":
    every row sees every key (ITM; also the text path, N = 0); "unimodal": queries see
    queries, text sees text (ITC); "prefix_lm": query rows see the queries only, text row i
    every query and the text tokens <= i (ITG).
    """
    B, text_len = text_mask.shape
    keys = jnp.concatenate([jnp.ones((B, num_queries), bool), text_mask.astype(bool)], axis=1)
    pos = jnp.arange(num_queries + text_len)
    query = pos < num_queries
    if mode == "multimodal":
        sees = jnp.ones((len(pos), len(pos)), bool)
    elif mode == "unimodal":
        sees = query[:, None] == query[None, :]
    elif mode == "prefix_lm":
        sees = query[None, :] | (~query[:, None] & (pos[None, :] <= pos[:, None]))
    else:
        raise ValueError(f"attention mode {mode!r}: expected one of {', '.join(MODES)}")
    return keys[:, None, None, :] & sees[None, None]                         # B, 1, N+L, N+L


class CrossAttention(L.Attention):
    """`L.Attention`'s projections with queries from x [B, N, D] and keys and values from
    context [B, S, D] (no mask) -> [B, N, D]."""

    def __call__(self, x, context):
        q = L.constrain(self.query(x), ("batch", "length", "heads", "kv"))
        k = L.constrain(self.key(context), ("batch", "length", "heads", "kv"))
        v = L.constrain(self.value(context), ("batch", "length", "heads", "kv"))
        return self.output(attention(q, k, v))


class QFormerLayer(nn.Module):
    """One pre-LN Q-Former layer over [queries ; text].

    Self-attention under `mask` over all positions; cross-attention of the query positions to
    `context` (when `cross_attention`); separate FFNs for query and text positions (BLIP-2's
    `intermediate_query` / `intermediate`).
    """

    width: int
    heads: int
    mlp_dim: int
    cross_attention: bool

    def setup(self):
        def attention_layer(cls):
            return cls(self.heads, self.heads, self.width // self.heads, self.width)

        def norm():
            return L.layer_norm(LAYER_NORM_EPS, jnp.float32)

        self.self_ln, self.self_attn = norm(), attention_layer(L.Attention)
        if self.cross_attention:
            self.cross_ln, self.cross_attn = norm(), attention_layer(CrossAttention)
        self.query_ln, self.query_mlp = norm(), L.MLP(self.mlp_dim, self.width, "gelu")
        self.text_ln, self.text_mlp = norm(), L.MLP(self.mlp_dim, self.width, "gelu")

    def __call__(self, queries, text, mask, context):
        """queries [B, N, D], text [B, L, D] (N = 0: the text path, L = 0: the image path),
        mask [B, 1, N+L, N+L] or None, context [B, S_d, D] -> (queries, text)."""
        num_queries = queries.shape[1]
        x = jnp.concatenate([queries, text], axis=1)
        x = x + self.self_attn(self.self_ln(x), mask=mask)
        queries, text = x[:, :num_queries], x[:, num_queries:]
        if num_queries:
            if self.cross_attention:
                queries = queries + self.cross_attn(self.cross_ln(queries), context)
            queries = queries + self.query_mlp(self.query_ln(queries))
        if text.shape[1]:
            text = text + self.text_mlp(self.text_ln(text))
        return queries, text

    def query_pass(self, queries, context):
        """The query positions alone, as under "prefix_lm" (they see only each other):
        queries [B, N, D], context [B, S_d, D] -> (queries, the (k, v) [B, N, H, Dh] that a
        text position's self-attention reads of them)."""
        q, k, v = self.self_attn.qkv(self.self_ln(queries))
        queries = queries + self.self_attn.output(attention(q, k, v))
        if self.cross_attention:
            queries = queries + self.cross_attn(self.cross_ln(queries), context)
        return queries + self.query_mlp(self.query_ln(queries)), (k, v)

    def text_step(self, token, position, prefix, cache):
        """Text position `position` alone, as under "prefix_lm": token [B, 1, D] reads the
        queries' (k, v) `prefix` and the text positions <= its own of `cache` ((k, v) [B, L,
        H, Dh], written up to position - 1) -> (token, cache with its own (k, v) written)."""
        q, k, v = self.self_attn.qkv(self.self_ln(token))
        cache = tuple(jax.lax.dynamic_update_slice_in_dim(c, new, position, axis=1)
                      for c, new in zip(cache, (k, v)))
        keys, values = (jnp.concatenate([p, c], axis=1) for p, c in zip(prefix, cache))
        sees = jnp.concatenate([jnp.ones(prefix[0].shape[1], bool),
                                jnp.arange(cache[0].shape[1]) <= position])
        token = token + self.self_attn.output(attention(q, keys, values, sees[None, None, None]))
        return token + self.text_mlp(self.text_ln(token)), cache


class ITAM(nn.Module):
    """BLIP-2's Q-Former (see the module docstring for the modes).

    Params: queries [N, D], token_embed [V, D], pos_embed [S_l, D], vision_ln, vision_proj
    [V_d, D], layers_i (`QFormerLayer`), final_ln, image_proj / text_proj [D, E],
    logit_scale, itm_head [D, 2], lm_head [D, V].
    """

    cfg: ITAMConfig

    def setup(self):
        cfg = self.cfg
        self.queries = self.param("queries", L.kernel_init(("length", "embed"), 0.02),
                                  (cfg.num_queries, cfg.width), jnp.float32)
        self.token_embed = self.param("token_embed", L.kernel_init(("vocab", "embed"), 0.02),
                                      (cfg.vocab_size, cfg.width), jnp.float32)
        self.pos_embed = self.param("pos_embed", L.kernel_init(("length", "embed"), 0.02),
                                    (cfg.max_text_len, cfg.width), jnp.float32)
        self.vision_ln = L.layer_norm(LAYER_NORM_EPS, jnp.float32)
        self.vision_proj = self._dense(cfg.width, (None, "embed"))
        self.layers = [QFormerLayer(cfg.width, cfg.heads, cfg.mlp_dim,
                                    cross_attention=i % cfg.cross_attention_every == 0)
                       for i in range(cfg.depth)]
        self.final_ln = L.layer_norm(LAYER_NORM_EPS, jnp.float32)
        self.image_proj = self._dense(cfg.embed_dim, ("embed", None))
        self.text_proj = self._dense(cfg.embed_dim, ("embed", None))
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(np.log(1 / 0.07)),
                                      (), jnp.float32)
        self.itm_head = self._dense(2, ("embed", None))
        self.lm_head = self._dense(cfg.vocab_size, ("embed", "vocab"))

    @staticmethod
    def _dense(features: int, axes: tuple[str | None, str | None]) -> L.Dense:
        return L.Dense(features, kernel_init=L.kernel_init(axes), bias_init=L.zeros(axes[1:]))

    def _embed_text(self, ids: jax.Array) -> jax.Array:
        """ids [B, L] -> token + learned position embeddings [B, L, D]."""
        if ids.shape[1] > self.cfg.max_text_len:
            raise ValueError(f"{ids.shape[1]} tokens exceed max_text_len={self.cfg.max_text_len}")
        return jnp.take(self.token_embed, ids, axis=0) + self.pos_embed[:ids.shape[1]]

    def encode(self, vision_tokens, ids, attend):
        """The layers over [queries (if vision_tokens) ; text (if ids)] under the mask attend
        [B, 1, N+L, N+L] (`attention_mask`, rows may differ in mode; None: all see all) ->
        (query outputs [B, N|0, D], text outputs [B, L|0, D])."""
        B, D = len(vision_tokens if ids is None else ids), self.cfg.width
        queries, text, context = jnp.zeros((B, 0, D)), jnp.zeros((B, 0, D)), None
        if vision_tokens is not None:
            queries = jnp.broadcast_to(self.queries, (B,) + self.queries.shape)    # B, N, D
            context = self.vision_proj(self.vision_ln(vision_tokens))          # B, S_d, D
        if ids is not None:
            text = self._embed_text(ids)                                       # B, L, D
        for layer in self.layers:
            queries, text = layer(queries, text, attend, context)
        return self.final_ln(queries), self.final_ln(text)

    def image_tokens(self, vision_tokens: jax.Array) -> jax.Array:
        """The image path: vision_tokens [B, S_d, V_d] -> F^I [B, N, D]."""
        return self.encode(vision_tokens, None, None)[0]

    def text_features(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
        """The text path: ids, mask [B, L] (1 = token) -> F^T [B, L, D]; row 0 (bos) is the
        sentence feature."""
        return self.joint_features(None, ids, mask, "multimodal")[1]

    def joint_features(self, vision_tokens, ids, mask, mode: str):
        """Queries (None: none) and text in one sequence under `mode` (one of `MODES`, see
        `attention_mask`) -> (query outputs [B, N, D], text outputs [B, L, D])."""
        num_queries = 0 if vision_tokens is None else self.cfg.num_queries
        return self.encode(vision_tokens, ids, attention_mask(num_queries, mask, mode))

    def match_logits(self, queries: jax.Array) -> jax.Array:
        """ITM head: query outputs [B, N, D] -> match (class 1) / no match logits [B, 2],
        averaged over the queries."""
        return self.itm_head(queries).mean(axis=1)

    def next_token_logits(self, text: jax.Array) -> jax.Array:
        """LM head: text outputs [B, L, D] -> logits [B, L, V], position i predicting token
        i + 1."""
        return self.lm_head(text)

    def caption_prefix(self, vision_tokens: jax.Array) -> list:
        """What every captioning step reads of the image: per layer, the (k, v) [B, N, H, Dh]
        of the query positions (`QFormerLayer.query_pass`)."""
        B = vision_tokens.shape[0]
        queries = jnp.broadcast_to(self.queries, (B,) + self.queries.shape)
        context = self.vision_proj(self.vision_ln(vision_tokens))
        prefix = []
        for layer in self.layers:
            queries, kv = layer.query_pass(queries, context)
            prefix.append(kv)
        return prefix

    def caption_step(self, ids: jax.Array, position, prefix: list, cache: list):
        """ITG one token at a time: ids [B] at text position `position` -> (logits [B, V] of
        the next token, `cache` (per layer the text (k, v)) with this position written).
        Equals `lm_logits(...)[:, position]` for a prefix written that far."""
        x = (jnp.take(self.token_embed, ids, axis=0)
             + jax.lax.dynamic_index_in_dim(self.pos_embed, position, keepdims=False))[:, None]
        new = []
        for layer, kv, layer_cache in zip(self.layers, prefix, cache):
            x, layer_cache = layer.text_step(x, position, kv, layer_cache)
            new.append(layer_cache)
        return self.next_token_logits(self.final_ln(x))[:, 0], new

    def itm_logits(self, vision_tokens, ids, mask) -> jax.Array:
        """ITM: match logits [B, 2] of a "multimodal" pass."""
        return self.match_logits(self.joint_features(vision_tokens, ids, mask, "multimodal")[0])

    def lm_logits(self, vision_tokens, ids, mask) -> jax.Array:
        """ITG: next-token logits [B, L, V] of a "prefix_lm" pass."""
        return self.next_token_logits(
            self.joint_features(vision_tokens, ids, mask, "prefix_lm")[1])

    def itc_embeddings(self, vision_tokens, ids, mask):
        """ITC's (image embeddings [B, N, E] one per query, sentence embeddings [B, E],
        log logit scale): the image and text paths, run as one "unimodal" pass."""
        queries, text = self.joint_features(vision_tokens, ids, mask, "unimodal")
        return self.image_proj(queries), self.text_proj(text[:, 0]), self.logit_scale

    def __call__(self, vision_tokens, ids, mask):
        """Every head once (what `init` runs): (ITC embeddings, ITM logits, ITG logits)."""
        return (self.itc_embeddings(vision_tokens, ids, mask),
                self.itm_logits(vision_tokens, ids, mask),
                self.lm_logits(vision_tokens, ids, mask))


def init_params(cfg: ITAMConfig, rng: jax.Array) -> dict:
    """Random params of an `ITAM` (float32, logical-axis boxes removed); compiled rather than
    run op by op."""
    vision = jnp.zeros((1, 1, cfg.vision_width), jnp.float32)
    ids = jnp.full((1, 2), cfg.bos_token_id, jnp.int32)
    return jax.jit(lambda r: nn.meta.unbox(
        ITAM(cfg).init(r, vision, ids, jnp.ones_like(ids))["params"]))(rng)


def itc_similarity(image_embeds: jax.Array, text_embeds: jax.Array) -> jax.Array:
    """BLIP-2's image-text similarity: image_embeds [B, N, E], text_embeds [M, E] -> [B, M],
    the largest cosine of a text with any of an image's N query embeddings."""
    cosines = jnp.einsum("bne,me->bmn", unit_rows(image_embeds), unit_rows(text_embeds))
    return cosines.max(axis=-1)


def sample_hard_negatives(logits: jax.Array, positive: jax.Array, rng: jax.Array):
    """BLIP-2's hard negatives: for each image i a text of the batch and for each text j an
    image, drawn with probabilities softmax(logits) over the pairs that are not positives.

    logits [B, B] (image i, text j), positive [B, B] bool (e.g. identical captions; symmetric,
    the diagonal set) -> (text index per image [B], image index per text [B], has_negative [B]:
    False where every pair of the row is positive, whose draw is then meaningless).
    """
    blocked = jnp.where(positive, BLOCKED, jax.lax.stop_gradient(logits))
    text_rng, image_rng = jax.random.split(rng)
    texts = jax.random.categorical(text_rng, blocked, axis=1)
    images = jax.random.categorical(image_rng, blocked.T, axis=1)
    return texts, images, ~positive.all(axis=1)


def blip2_loss(model: ITAM, params, vision_tokens: jax.Array, ids: jax.Array, mask: jax.Array,
               rng: jax.Array):
    """BLIP-2's training loss ITC + ITM + ITG on a batch of B (crop, caption) pairs.

    vision_tokens [B, S_d, V_d]; ids, mask [B, L] (ids start with bos, right-padded); rng for
    the hard negatives. Identical captions in a batch are positives of each other (ITC
    targets, never drawn as ITM negatives). ITM sees the B pairs and 2B hard negatives (an
    other text per image, an other image per text); ITG is next-token cross-entropy on the
    real text tokens after bos. Two passes: ITC's, then ITG's and ITM's rows together, each
    under its own mask. Returns (loss, metrics: loss, itc, itm, itg, itc_accuracy (text ->
    image top-1), itm_accuracy).
    """
    variables = {"params": params}
    vision_tokens, ids, mask = jnp.asarray(vision_tokens), jnp.asarray(ids), jnp.asarray(mask)
    B, num_queries = len(ids), model.cfg.num_queries
    image_embeds, text_embeds, logit_scale = model.apply(variables, vision_tokens, ids, mask,
                                                         method=ITAM.itc_embeddings)
    similarity = itc_similarity(image_embeds, text_embeds)                       # B, B
    itc, itc_accuracy = similarity_contrastive_loss(similarity, logit_scale, ids)

    texts, images, has_negative = sample_hard_negatives(
        logit_scale_factor(logit_scale) * similarity, same_rows(ids), rng)
    # rows: ITG's pairs, then ITM's pairs, images with a negative text, negative images
    row_vision = jnp.concatenate([vision_tokens, vision_tokens, vision_tokens,
                                  vision_tokens[images]])
    row_ids = jnp.concatenate([ids, ids, ids[texts], ids])
    row_mask = jnp.concatenate([mask, mask, mask[texts], mask])
    attend = jnp.concatenate([attention_mask(num_queries, mask, "prefix_lm"),
                              attention_mask(num_queries, row_mask[B:], "multimodal")])
    queries, text = model.apply(variables, row_vision, row_ids, attend, method=ITAM.encode)
    lm_logits = model.apply(variables, text[:B], method=ITAM.next_token_logits)
    itg = lm_loss(lm_logits[:, :-1], jnp.where(mask[:, 1:] > 0, ids[:, 1:], -1))
    itm_logits = model.apply(variables, queries[B:], method=ITAM.match_logits)   # 3B, 2
    no_pair = jnp.where(has_negative, 0, -1)                   # -1: not scored
    itm_labels = jnp.concatenate([jnp.ones((B,), jnp.int32), no_pair, no_pair])
    itm = lm_loss(itm_logits, itm_labels)                      # two-class cross-entropy
    itm_accuracy = (itm_logits.argmax(-1) == itm_labels).sum() / (itm_labels >= 0).sum()

    loss = itc + itm + itg
    return loss, {"loss": loss, "itc": itc, "itm": itm, "itg": itg,
                  "itc_accuracy": itc_accuracy, "itm_accuracy": itm_accuracy}


@functools.partial(jax.jit, static_argnames=("model", "max_len"))
def caption(model: ITAM, params, vision_tokens: jax.Array, max_len: int = 32) -> jax.Array:
    """Greedy image-grounded text generation (IGTG): vision_tokens [B, S_d, V_d] -> ids
    [B, max_len]: bos, then the argmax token at each position until the row emits eos, pad
    after it (the layout `text_features` takes).

    The query positions run once (`ITAM.caption_prefix`), then one text position per step
    through a KV cache (`ITAM.caption_step`): the ITG pass's logits, ~max_len times less work
    than rerunning it over the whole sequence. Stops once every row has emitted eos.
    """
    cfg = model.cfg
    if not 2 <= max_len <= cfg.max_text_len:
        raise ValueError(f"max_len={max_len}: expected 2..max_text_len={cfg.max_text_len}")
    B = vision_tokens.shape[0]
    ids = jnp.full((B, max_len), cfg.pad_token_id, jnp.int32).at[:, 0].set(cfg.bos_token_id)
    run = functools.partial(model.apply, {"params": params})
    prefix = run(vision_tokens, method=ITAM.caption_prefix)
    empty = jnp.zeros((B, max_len) + prefix[0][0].shape[2:], prefix[0][0].dtype)
    cache = [(empty, empty) for _ in prefix]                        # per layer [B, L, H, Dh]

    def unfinished(carry):
        position, _, done, _ = carry
        return (position < max_len) & ~done.all()

    def step(carry):
        position, ids, done, cache = carry
        logits, cache = run(ids[:, position - 1], position - 1, prefix, cache,
                            method=ITAM.caption_step)
        token = jnp.where(done, cfg.pad_token_id, logits.argmax(-1).astype(jnp.int32))
        return (position + 1, ids.at[:, position].set(token),
                done | (token == cfg.eos_token_id), cache)

    _, ids, _, _ = jax.lax.while_loop(unfinished, step,
                                      (1, ids, jnp.zeros((B,), bool), cache))
    return ids
