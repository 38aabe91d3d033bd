"""AHD (paper 000 eqs. 2-7) against float64 numpy transcriptions on tiny inputs."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tvad_jax.data.synthetic import spec
from tvad_jax.models import ahd

rng = np.random.default_rng(0)
B, T, G, DV, DT = 2, 3, 4, 12, 8   # G x G patch grid


def _hidden(n):
    return [jnp.asarray(rng.standard_normal((B, T, 1 + G * G, DV)), jnp.float32)
            for _ in range(n)]


def _gelu(x):
    from scipy.special import erf
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def _numpy_depthwise(x, kernel, bias):
    """Zero-padded depthwise convolution over axes 1..3, output position by output position."""
    out = np.zeros_like(x)
    kt, kh, kw = kernel.shape[:3]
    _, T_, H_, W_, _ = x.shape
    for t, h, w in np.ndindex(T_, H_, W_):
        for a, b, c in np.ndindex(kt, kh, kw):
            u, v, z = t + a - kt // 2, h + b - kh // 2, w + c - kw // 2
            if 0 <= u < T_ and 0 <= v < H_ and 0 <= z < W_:
                out[:, t, h, w] += x[:, u, v, z] * kernel[a, b, c]
    return out + bias


def _numpy_ahd(params, hidden, text, cfg):
    """Eqs. 3-7 in float64 from the module's params."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
    t = text.astype(np.float64)
    if cfg.dim is not None:
        t = t @ p["text_proj"]["kernel"]
    if cfg.center_text:
        t = t - t.mean(-2, keepdims=True)
    t = t / np.linalg.norm(t, axis=-1, keepdims=True)
    sims = []
    for i, h in enumerate(hidden):
        x = np.asarray(h, np.float64)[:, :, 1:].reshape(B, T, G, G, DV)
        if cfg.input_norm:
            n = p[f"norm_{i}"]
            x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
            x = x * n["scale"] + n["bias"]
        x = _gelu(x @ p[f"fc1_{i}"]["kernel"] + p[f"fc1_{i}"]["bias"])
        if cfg.context:
            c = p[f"context_{i}"]
            x = x + _gelu(_numpy_depthwise(x, c["kernel"], c["bias"]))
        x = x @ p[f"fc2_{i}"]["kernel"] + p[f"fc2_{i}"]["bias"]
        x = x / np.linalg.norm(x, axis=-1, keepdims=True)
        sims.append(np.einsum("bthwd,cd->bthwc", x, t))
    raw = p["layer_weights"]
    w = np.exp(raw) / np.exp(raw).sum() if cfg.layer_weighting == "softmax" else raw
    fused = sum(wi * s for wi, s in zip(w, sims))
    logits = min(np.exp(p["log_scale"]), cfg.max_logit_scale) * fused
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return np.stack(sims), fused, e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("cfg", [ahd.AHDConfig(num_layers=2),
                                 ahd.AHDConfig(num_layers=3, dim=6, mlp_dim=5,
                                               layer_weighting="free", input_norm=False,
                                               center_text=False),
                                 ahd.AHDConfig(num_layers=2, mlp_dim=5, context=3)])
def test_ahd_matches_numpy(cfg):
    hidden = _hidden(cfg.num_layers)
    text = rng.standard_normal((2, DT)).astype(np.float32)
    model = ahd.AHD(cfg)
    apply = jax.jit(model.apply)
    params = nn.unbox(jax.jit(model.init)(jax.random.key(0), hidden, text)["params"])
    params = jax.tree.map(lambda x: x + 0.3 * rng.standard_normal(x.shape).astype(np.float32),
                          params)   # non-trivial layer weights / scale
    out = apply({"params": params}, hidden, text)
    per_layer, fused, probs = _numpy_ahd(params, hidden, text, cfg)
    assert out.probs.shape == (B, T, G, G, 2) and out.heatmap.shape == (B, T, G, G)
    np.testing.assert_allclose(out.per_layer, per_layer, atol=2e-5)
    np.testing.assert_allclose(out.similarity, fused, atol=2e-5)
    np.testing.assert_allclose(out.probs, probs, atol=2e-5)
    np.testing.assert_allclose(out.probs.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(out.heatmap, out.probs[..., 1])
    if cfg.center_text:   # centred class features are opposite: the similarities are too
        np.testing.assert_allclose(out.similarity[..., 0], -out.similarity[..., 1], atol=1e-6)
    # batched text [B, 2, D_t] with identical rows gives the same maps
    out_b = apply({"params": params}, hidden, jnp.broadcast_to(text, (B, 2, DT)))
    np.testing.assert_allclose(out_b.probs, out.probs, atol=1e-6)


def test_context_reaches_the_neighbouring_tubelets_and_patches_only():
    """With context k = 3 a heatmap cell depends on its 3 x 3 x 3 neighbourhood of patches;
    without it, on its own patch alone (the paper)."""
    hidden, text = _hidden(2), rng.standard_normal((2, DT)).astype(np.float32)
    for context, reach in ((0, 0), (3, 1)):
        model = ahd.AHD(ahd.AHDConfig(num_layers=2, context=context))
        params = model.init(jax.random.key(0), hidden, text)["params"]
        cell = lambda h: model.apply({"params": params}, h, text).heatmap[0, 1, 1, 1]  # noqa: E731
        grads = jax.grad(cell)(hidden)[0][0, :, 1:].reshape(T, G, G, DV)
        touched = np.argwhere(np.abs(np.asarray(grads)).sum(-1) > 0)
        np.testing.assert_array_equal(touched.min(0), [1 - reach] * 3)
        np.testing.assert_array_equal(touched.max(0), [1 + reach] * 3)
    with pytest.raises(ValueError, match="odd size"):
        ahd.AHDConfig(context=2)


def test_a_grid_of_another_aspect_lays_the_patches_row_by_row():
    """`grid` (h, w) (a backbone's non-square frames): each patch is mapped alone, so the heat
    is the square layout's read row-major as h x w, and context's 3 x 3 neighbourhood of
    patch (1, 3) on a 2 x 8 grid is rows 0-1, columns 2-4."""
    hidden, text = _hidden(2), rng.standard_normal((2, DT)).astype(np.float32)
    square = ahd.AHD(ahd.AHDConfig(num_layers=2))
    params = square.init(jax.random.key(0), hidden, text)["params"]
    wide = ahd.AHD(ahd.AHDConfig(num_layers=2, grid=(2, 8)))
    heat = wide.apply({"params": params}, hidden, text).heatmap
    assert heat.shape == (B, T, 2, 8)
    np.testing.assert_array_equal(heat.reshape(B, T, -1),
                                  square.apply({"params": params}, hidden, text)
                                  .heatmap.reshape(B, T, -1))
    model = ahd.AHD(ahd.AHDConfig(num_layers=2, context=3, grid=(2, 8)))
    params = model.init(jax.random.key(0), hidden, text)["params"]
    cell = lambda h: model.apply({"params": params}, h, text).heatmap[0, 1, 1, 3]  # noqa: E731
    grads = jax.grad(cell)(hidden)[0][0, :, 1:].reshape(T, 2, 8, DV)
    touched = np.argwhere(np.abs(np.asarray(grads)).sum(-1) > 0)
    np.testing.assert_array_equal(touched.min(0), [0, 0, 2])
    np.testing.assert_array_equal(touched.max(0), [2, 1, 4])
    with pytest.raises(ValueError, match="not a square grid"):
        square.apply({"params": params}, [h[:, :, :-1] for h in hidden], text)
    with pytest.raises(ValueError, match="does not hold"):
        ahd.AHD(ahd.AHDConfig(num_layers=2, grid=(3, 5))).apply({"params": params}, hidden, text)


def test_layer_weighting_selects_layers():
    cfg = ahd.AHDConfig(num_layers=2)
    hidden, text = _hidden(2), rng.standard_normal((2, DT)).astype(np.float32)
    model = ahd.AHD(cfg)
    apply = jax.jit(model.apply)
    params = nn.unbox(jax.jit(model.init)(jax.random.key(1), hidden, text)["params"])
    out = apply({"params": params}, hidden, text)
    np.testing.assert_allclose(out.similarity, out.per_layer.mean(0), atol=1e-6)  # uniform init
    np.testing.assert_allclose(out.probs.sum(-1), 1.0, atol=1e-6)
    params = dict(params, layer_weights=jnp.asarray([30.0, -30.0]))
    out = apply({"params": params}, hidden, text)
    np.testing.assert_allclose(out.similarity, out.per_layer[0], atol=1e-6)


def test_class_features_means_tokens_then_templates():
    S, Lt = 5, 4
    tokens = rng.standard_normal((S, Lt, DT)).astype(np.float32)
    masks = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]])
    groups = np.array([0, 1, 0, 1, 1])
    got = ahd.class_features(tokens, masks, groups)
    sent = np.stack([tokens[s, masks[s] > 0].mean(0) for s in range(S)])
    want = np.stack([sent[groups == c].mean(0) for c in (0, 1)])
    np.testing.assert_allclose(got, want, atol=1e-6)
    with pytest.raises(ValueError):
        ahd.class_features(tokens, masks, np.zeros(S, int))   # no abnormal sentence


def test_prompt_templates():
    normal, abnormal = ahd.prompt_templates(spec.ANOMALY_TYPES, spec.NORMAL_BEHAVIOURS)
    P = len(ahd.PROMPT_PREFIXES)
    assert len(abnormal) == P * len(spec.ANOMALY_TYPES)
    assert len(normal) == P * (len(spec.ANOMALY_TYPES) + len(spec.NORMAL_BEHAVIOURS))
    with pytest.raises(ValueError, match="anomaly vocabulary"):
        ahd.prompt_templates((), spec.NORMAL_BEHAVIOURS)
    assert ("A short surveillance clip where surveillance video of person running occurs"
            in abnormal)
    assert ("A short surveillance clip where surveillance video of person running not occurs"
            in normal)
    assert all(s.endswith(" occurs") and " not occurs" not in s for s in abnormal)
    assert "_" not in " ".join(normal + abnormal)
    sentences, groups = ahd.flatten_prompts(normal, abnormal)
    assert len(sentences) == len(groups) and groups.sum() == len(abnormal)


def test_patch_targets_and_loss():
    masks = np.zeros((1, 2, 8, 8), np.uint8)
    masks[0, 0, :4, :2] = 1          # half of patch (0, 0) of a 2x2 grid
    masks[0, 1, 4:, 4:] = 255        # all of patch (1, 1)
    area = ahd.patch_targets(masks, (2, 2))
    mx = ahd.patch_targets(masks, (2, 2), mode="max")
    np.testing.assert_allclose(area[0, 0], [[0.5, 0], [0, 0]])
    np.testing.assert_allclose(mx[0, 0], [[1, 0], [0, 0]])
    np.testing.assert_allclose(area[0, 1], [[0, 0], [0, 1]])
    logits = rng.standard_normal((1, 2, 2, 2, 2)).astype(np.float32)
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    y = np.asarray(area)
    ce = -(y * np.log(p[..., 1]) + (1 - y) * np.log(p[..., 0]))
    np.testing.assert_allclose(ahd.pixel_loss(logits, area), ce.mean(), rtol=1e-5)
    valid = np.array([[1, 0]], np.float32)[:, :, None, None]
    np.testing.assert_allclose(ahd.pixel_loss(logits, area, valid), ce[0, 0].mean(), rtol=1e-5)
    # class-balanced and focal: the abnormal term weighted, each term modulated
    a, g = 20.0, 2.0
    p1 = p[..., 1]
    focal = -(a * (1 - p1) ** g * y * np.log(p1) + p1 ** g * (1 - y) * np.log(1 - p1))
    np.testing.assert_allclose(ahd.pixel_loss(logits, area, abnormal_weight=a, focal_gamma=g),
                               focal.mean(), rtol=1e-5)


def test_frame_loss_scores_each_tubelets_warmest_cell():
    logits = rng.standard_normal((2, 3, 2, 2, 2)).astype(np.float32)
    targets = np.zeros((2, 3, 2, 2), np.float32)
    targets[0, 1, 1, 0] = 0.25                     # any abnormal share makes the tubelet abnormal
    targets[1, 2] = 1.0
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    top = p[..., 1].reshape(2, 3, -1).max(-1)      # the frame score: the warmest cell
    y = np.array([[0, 1, 0], [0, 0, 1]], np.float32)
    ce = -(y * np.log(top) + (1 - y) * np.log(1 - top))
    np.testing.assert_allclose(ahd.frame_loss(logits, targets), ce.mean(), rtol=1e-5)
    valid = np.array([[1, 1, 0], [1, 0, 0]], np.float32)[:, :, None, None]
    np.testing.assert_allclose(ahd.frame_loss(logits, targets, valid),
                               ce[valid[..., 0, 0] > 0].mean(), rtol=1e-5)


def test_upsample():
    hm = jnp.asarray(rng.random((1, 2, 3, 3)), jnp.float32)
    up = ahd.upsample(hm, (12, 12), tubelet=2)
    assert up.shape == (1, 4, 12, 12)
    np.testing.assert_array_equal(up[:, 0], up[:, 1])
    const = ahd.upsample(jnp.full((1, 1, 3, 3), 0.25), (7, 5))
    np.testing.assert_allclose(const, 0.25, atol=1e-6)
    # bilinear: the centre pixel of a 3x -> 9x upsample is the centre value
    np.testing.assert_allclose(ahd.upsample(hm, (9, 9))[0, 0, 4, 4], hm[0, 0, 1, 1], atol=1e-6)
