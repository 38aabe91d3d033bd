"""ITAM (BLIP-2's Q-Former): its mode masks, ITC's max-over-queries similarity, the hard
negatives, and a toy training run after which the captioner reproduces each crop's sentence."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tvad_jax.models import itam
from tvad_jax.models.losses import same_rows

PAD, BOS, EOS = 0, 1, 2
CFG = itam.ITAMConfig(vision_width=16, vocab_size=12, bos_token_id=BOS, eos_token_id=EOS,
                      pad_token_id=PAD, width=32, depth=2, heads=2, mlp_dim=64, num_queries=4,
                      max_text_len=8, embed_dim=16)
MODEL = itam.ITAM(CFG)
# four distinct sentences over a shared tiny vocabulary (words 3..11), right-padded
IDS = np.array([[BOS, 3, 4, 5, EOS, PAD, PAD, PAD],
                [BOS, 3, 6, 7, EOS, PAD, PAD, PAD],
                [BOS, 8, 4, 9, 10, EOS, PAD, PAD],
                [BOS, 8, 6, EOS, PAD, PAD, PAD, PAD]], np.int32)
MASK = (IDS != PAD).astype(np.int32)
VISION = np.random.default_rng(0).normal(size=(4, 6, CFG.vision_width)).astype(np.float32)


@pytest.fixture(scope="module")
def params():
    # an "rbg" key: one RNG op per draw, which compiles in a fraction of threefry's time
    return jax.jit(itam.init_params, static_argnums=0)(CFG, jax.random.key(0, impl="rbg"))


@jax.jit
def every_output(params, vision, ids, mask):
    """The image and text paths and (queries, text) of each joint mode, in one compiled call."""
    apply = functools.partial(MODEL.apply, {"params": params})
    out = {mode: apply(vision, ids, mask, mode, method=itam.ITAM.joint_features)
           for mode in itam.MODES}
    out["image"] = apply(vision, method=itam.ITAM.image_tokens)
    out["text"] = apply(ids, mask, method=itam.ITAM.text_features)
    return out


@pytest.mark.parametrize("field, value", [("width", 31), ("eos_token_id", 12),
                                          ("cross_attention_every", 0), ("depth", 1)])
def test_config_is_validated(field, value):
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(CFG, **{field: value})


def test_layers_share_self_attention_and_keep_separate_ffns():
    cfg = dataclasses.replace(CFG, vision_width=8, width=16, depth=3, cross_attention_every=2)
    shapes = jax.eval_shape(functools.partial(itam.init_params, cfg), jax.random.key(0))
    layers = [shapes[f"layers_{i}"] for i in range(3)]
    assert ["cross_attn" in layer for layer in layers] == [True, False, True]   # BLIP-2's freq
    for layer in layers:                          # one self-attention for both, two FFNs
        assert set(layer) >= {"self_attn", "query_mlp", "text_mlp"}
    assert layers[0]["cross_attn"]["key"]["kernel"].shape == (16, 2, 8)
    assert shapes["vision_proj"]["kernel"].shape == (8, 16)
    assert shapes["queries"].shape == (4, 16) and shapes["lm_head"]["kernel"].shape == (16, 12)


def test_attention_mask_of_each_mode():
    text_mask = jnp.asarray([[1, 1, 0]])         # two queries, three text slots, the last pad
    o, x = True, False                          # rows attend to keys q0 q1 t0 t1 t2 when o
    expected = {"multimodal": [[o, o, o, o, x]] * 5,
                "unimodal": [[o, o, x, x, x]] * 2 + [[x, x, o, o, x]] * 3,
                "prefix_lm": [[o, o, x, x, x]] * 2 + [[o, o, o, x, x],       # text i: text <= i
                                                      [o, o, o, o, x],
                                                      [o, o, o, o, x]]}      # the pad row
    for mode, rows in expected.items():
        np.testing.assert_array_equal(itam.attention_mask(2, text_mask, mode), [[rows]], mode)
    with pytest.raises(ValueError, match="causal"):
        itam.attention_mask(2, text_mask, "causal")


def test_output_shapes(params):
    B, N, D, L, V = 4, CFG.num_queries, CFG.width, IDS.shape[1], CFG.vocab_size

    def shape(*args, method):
        return jax.eval_shape(functools.partial(MODEL.apply, {"params": params}, method=method),
                              *args).shape

    assert shape(VISION, method=itam.ITAM.image_tokens) == (B, N, D)
    assert shape(IDS, MASK, method=itam.ITAM.text_features) == (B, L, D)
    assert shape(VISION, IDS, MASK, method=itam.ITAM.itm_logits) == (B, 2)
    assert shape(VISION, IDS, MASK, method=itam.ITAM.lm_logits) == (B, L, V)
    image, text, _ = jax.eval_shape(functools.partial(
        MODEL.apply, {"params": params}, method=itam.ITAM.itc_embeddings), VISION, IDS, MASK)
    assert image.shape == (B, N, CFG.embed_dim) and text.shape == (B, CFG.embed_dim)


def test_masks_decide_what_each_path_sees(params):
    base = every_output(params, VISION, IDS, MASK)
    ids = IDS.copy()
    ids[0, 2] = 9                                      # a real token of row 0 changes
    ids[1, 6] = 11                                     # a padded slot of row 1 changes
    changed = every_output(params, VISION, ids, MASK)
    other_vision = every_output(params, VISION[::-1].copy(), IDS, MASK)

    def same(a, b):
        return np.allclose(a, b, atol=1e-5)

    # the image path sees the vision tokens and no text
    assert same(changed["image"], base["image"])
    assert not same(other_vision["image"], base["image"])
    # the text path is bidirectional (row 0, the sentence feature, sees token 2), hides
    # padding and sees no vision
    assert not same(changed["text"][0, 0], base["text"][0, 0])
    assert same(changed["text"][1, :5], base["text"][1, :5])
    assert same(other_vision["text"], base["text"])
    # ITC's unimodal pass is the image path and the text path side by side
    queries, text = base["unimodal"]
    assert same(queries, base["image"]) and same(text, base["text"])
    # ITG: the queries never see the text (they are the image path's tokens for any text);
    # text position i sees the text tokens <= i only
    assert same(changed["prefix_lm"][0], base["image"])
    assert same(changed["prefix_lm"][1][0, :2], base["prefix_lm"][1][0, :2])
    assert not same(changed["prefix_lm"][1][0, 2:], base["prefix_lm"][1][0, 2:])
    # ITM: queries and text see each other
    assert not same(changed["multimodal"][0][0], base["multimodal"][0][0])
    assert not same(other_vision["multimodal"][1], base["multimodal"][1])


def test_the_cached_captioner_reads_what_the_whole_itg_pass_reads(params):
    """caption_step, one text position at a time through the KV cache, gives the logits of
    the prefix-LM pass over the whole sequence (`lm_logits`); `caption` writes their greedy
    argmax position by position, pad after a row's eos."""
    vision = jnp.asarray(VISION)
    ones = jnp.ones_like(IDS)

    @jax.jit
    def cached_and_whole(params):
        apply = functools.partial(MODEL.apply, {"params": params})
        prefix = apply(vision, method=itam.ITAM.caption_prefix)
        empty = jnp.zeros((4, CFG.max_text_len, CFG.heads, CFG.width // CFG.heads))
        cache, steps = [(empty, empty)] * CFG.depth, []
        for position in range(CFG.max_text_len):
            logits, cache = apply(IDS[:, position], position, prefix, cache,
                                  method=itam.ITAM.caption_step)
            steps.append(logits)
        return jnp.stack(steps, 1), apply(vision, IDS, ones, method=itam.ITAM.lm_logits)

    cached, whole = cached_and_whole(params)
    np.testing.assert_allclose(cached, whole, rtol=1e-5, atol=1e-5)
    ids = np.asarray(itam.caption(MODEL, params, vision, max_len=CFG.max_text_len))
    assert (ids[:, 0] == BOS).all()
    greedy = np.asarray(MODEL.apply({"params": params}, vision, ids, ones,
                                    method=itam.ITAM.lm_logits)).argmax(-1)
    for row, want in zip(ids, greedy):
        ended = np.flatnonzero(row == EOS)
        stop = ended[0] if len(ended) else CFG.max_text_len - 1
        np.testing.assert_array_equal(row[1:stop + 1], want[:stop])
        assert (row[stop + 1:] == PAD).all()


def test_itc_similarity_is_the_best_query_cosine():
    rng = np.random.default_rng(1)
    image, text = rng.normal(size=(3, 5, 7)), rng.normal(size=(4, 7))
    got = itam.itc_similarity(jnp.asarray(image, jnp.float32), jnp.asarray(text, jnp.float32))
    expected = np.empty((3, 4))
    for b in range(3):
        for m in range(4):
            expected[b, m] = max(q @ text[m] / np.linalg.norm(q) / np.linalg.norm(text[m])
                                 for q in image[b])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_hard_negatives_follow_the_softmax_over_non_positives():
    logits = jnp.asarray([[5.0, 1.0, 3.0, 0.0],
                          [2.0, 4.0, 0.0, 1.0],
                          [0.5, 1.0, 6.0, 2.0],
                          [1.0, 0.0, 0.5, 3.0]])
    positive = same_rows(jnp.asarray([[7], [8], [7], [9]]))      # rows 0 and 2 share a text
    draw = jax.jit(jax.vmap(itam.sample_hard_negatives, in_axes=(None, None, 0)))
    keys = jax.random.split(jax.random.key(0), 4000)
    texts, images, has_negative = draw(logits, positive, keys)
    assert bool(has_negative.all())
    for picks, table in ((texts, logits), (images, logits.T)):
        for row in range(4):
            p = np.where(positive[row], 0.0, np.exp(table[row]))
            frequency = np.bincount(np.asarray(picks[:, row]), minlength=4) / len(picks)
            np.testing.assert_allclose(frequency, p / p.sum(), atol=0.03)
    _, _, has_negative = draw(logits, jnp.ones((4, 4), bool), keys)
    assert not bool(has_negative.any())                             # nothing to draw


@pytest.mark.slow   # ~20 s of compiles; `tvad train local-patterns`' test trains ITAM too
def test_training_aligns_retrieves_and_captions_the_toy_crops(params):
    """100 Adam steps of blip2_loss on four crops, each with its own sentence: the loss
    drops, ITC retrieval and ITM are perfect and the greedy captioner reproduces each
    sentence exactly."""
    opt = optax.flatten(optax.adam(3e-3))     # one flat vector: fewer ops to compile

    @jax.jit
    def train(params):
        def step(carry, i):
            params, state = carry
            grads, metrics = jax.grad(
                lambda p: itam.blip2_loss(MODEL, p, VISION, IDS, MASK,
                                          jax.random.fold_in(jax.random.key(1), i)),
                has_aux=True)(params)
            updates, state = opt.update(grads, state)
            return (optax.apply_updates(params, updates), state), metrics

        (params, _), metrics = jax.lax.scan(step, (params, opt.init(params)), jnp.arange(100))
        return params, metrics

    trained, metrics = train(params)
    last = {name: float(values[-1]) for name, values in metrics.items()}
    assert last["loss"] < 0.05 * float(metrics["loss"][0]), last
    # a symmetric ITC loss under ln(2) / (2 B) puts every row's and every column's own pair
    # above probability 1/2: top-1 retrieval both ways
    assert last["itc"] < np.log(2) / 8 and last["itc_accuracy"] == 1.0, last
    assert last["itm_accuracy"] == 1.0, last
    np.testing.assert_array_equal(itam.caption(MODEL, trained, VISION, max_len=8), IDS)
