"""Anomaly Heatmap Decoder (paper 000 §3.2.1, eqs. 2-7): ViT layers x class sentences -> heatmaps.

    normal, abnormal = prompt_templates(anomalies, normals)   # the benchmark's vocabulary
    sentences, groups = flatten_prompts(normal, abnormal)
    S = class_features(text_tokens, text_masks, groups)      # [2, D_t] (eqs. 2, 4)
    ahd = AHD(AHDConfig(num_layers=len(vision_out.hidden)))
    out = ahd.apply({"params": p}, vision_out.hidden, S)
    out.probs     # [B, T', h, w, 2] softmax over (normal, abnormal)   (eq. 7)
    out.heatmap   # [B, T', h, w] the abnormal channel H
    targets = patch_targets(batch["tubelet_masks"], (h, w))
    loss = pixel_loss(out.logits, targets) + frame_weight * frame_loss(out.logits, targets)

Letters: B batch, T' tubelets, N = h*w patches, h, w the patch grid, D_v ViT width, D_t text
width, D the shared width, C = 2 classes (0 normal, 1 abnormal), S sentences, L tokens.

Per chosen ViT layer i (eq. 3) the patch tokens (CLS dropped) go through their own MLP to the
shared width (V'_i); the cosine similarity of every (t, h, w) vector with each class feature
gives h^i_c (eq. 5); learnable layer weights w_i combine the layers (eq. 6, `similarity`);
a learnable logit scale (CLIP's exp(log_scale), clipped at `max_logit_scale`) multiplies the
fused similarities before the softmax over classes (eq. 7). Without the scale the softmax of
two cosines in [-1, 1] could never leave (0.12, 0.88).

Choices the paper leaves open (all in `AHDConfig`):
- Layer weights: "softmax" (w = softmax(logits), zeros at init: a convex mix, uniform at
  start) or "free" (raw w_i, 1/n at init, as eq. 6 literally reads).
- Shared width: `dim=None` is the paper (the visual MLPs map to the text width D_t, text
  features are used as they are); an int adds a learnable linear map D_t -> dim on the text.
- `input_norm`: a LayerNorm before each layer's MLP (intermediate ViT layers are raw residual
  streams whose scale grows with depth). Not in the paper; on by default.
- `center_text`: subtract the mean of the class features before normalizing them, so normal
  and abnormal become opposite directions. Not in the paper; on by default, because a small
  text tower maps "X occurs" and "X not occurs" to nearly the same mean-pooled feature (cosine
  0.999998 between the two class features of the shipped backbone), and cosines against two
  such vectors cannot separate the classes however the visual MLPs are trained.
- `context`: each layer's MLP also sees its neighbours in time and space (a depthwise
  k x 3 x 3 convolution on the hidden features), so that a patch can read how a feature moved
  between tubelets. Not in the paper (every patch on its own); off by default.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tvad_jax.models import layers as L
from tvad_jax.models.configs import dtype_of
from tvad_jax.models.text import mean_pool

# ---------------------------------------------------------------------------------------------
# Prompts (eq. 2)

PROMPT_PREFIXES = (
    "A short surveillance clip where surveillance video of",   # the paper's Fig. 2 template
    "A surveillance camera recording in which",
    "A street scene from a fixed camera where",
)

# Behaviour -> noun phrase for the synthetic benchmark's vocabulary (its normal behaviours and
# anomaly types); anything else becomes "person <behaviour with spaces>".
BEHAVIOUR_PHRASES = {
    "walking": "person walking",
    "standing": "person standing",
    "crossing": "person crossing at the crossing",
    "driving": "car driving",
    "yielding": "car yielding",
    "riding": "cyclist riding on the road",
    "flying": "bird flying",
    "running": "person running",
    "falling": "person falling",
    "jaywalking": "person jaywalking",
    "fighting": "people fighting",
    "loitering": "person loitering",
    "wrong_way": "car driving the wrong way",
    "car_on_sidewalk": "car on the sidewalk",
    "cyclist_on_sidewalk": "cyclist on the sidewalk",
    "sudden_stop": "car stopping suddenly",
    "throwing": "person throwing an object",
}


def behaviour_phrase(behaviour: str) -> str:
    return BEHAVIOUR_PHRASES.get(behaviour, "person " + behaviour.replace("_", " "))


def prompt_templates(anomalies: Sequence[str], normals: Sequence[str],
                     prefixes: Sequence[str] = PROMPT_PREFIXES) -> tuple[list[str], list[str]]:
    """(normal sentences, abnormal sentences) in the paper's style (§3.2.1, Fig. 2).

    Abnormal: "<prefix> <anomaly phrase> occurs" for every prefix x anomaly.
    Normal: "<prefix> <anomaly phrase> not occurs" for every prefix x anomaly (the paper's
    negation), plus "<prefix> <normal phrase> occurs" for every normal behaviour.
    The vocabulary is the dataset's (the T-VAD job passes the benchmark's through
    `TVADConfig.anomalies` / `normals`). Deterministic order.
    """
    if not anomalies:
        raise ValueError("the AHD's prompts need an anomaly vocabulary (TVADConfig.anomalies)")
    abnormal = [f"{p} {behaviour_phrase(a)} occurs" for p in prefixes for a in anomalies]
    normal = [f"{p} {behaviour_phrase(a)} not occurs" for p in prefixes for a in anomalies]
    normal += [f"{p} {behaviour_phrase(n)} occurs" for p in prefixes for n in normals]
    return normal, abnormal


def flatten_prompts(normal: Sequence[str], abnormal: Sequence[str]
                    ) -> tuple[list[str], np.ndarray]:
    """One sentence list for the text tower and its class ids [S] (0 normal, 1 abnormal)."""
    groups = np.asarray([0] * len(normal) + [1] * len(abnormal), np.int32)
    return list(normal) + list(abnormal), groups


def class_features(token_features: jax.Array, masks: jax.Array | None,
                   template_groups, num_classes: int = 2) -> jax.Array:
    """Class text features: mean over valid tokens (eq. 2), then over each class's sentences
    (eq. 4). token_features [S, L, D_t], masks [S, L] (None: all valid), template_groups [S]
    class ids (static, e.g. from `flatten_prompts`) -> [num_classes, D_t] float32.
    """
    groups = np.asarray(template_groups)
    if groups.shape != (token_features.shape[0],):
        raise ValueError(f"template_groups {groups.shape} != sentences "
                         f"({token_features.shape[0]},)")
    onehot = (groups[None, :] == np.arange(num_classes)[:, None]).astype(np.float32)  # C, S
    counts = onehot.sum(1, keepdims=True)
    if (counts == 0).any():
        raise ValueError(f"a class has no sentence: counts {counts.ravel().tolist()}")
    sentences = mean_pool(token_features, masks)                                     # S, D_t
    return jnp.asarray(onehot / counts) @ sentences


# ---------------------------------------------------------------------------------------------
# The module (eqs. 3-7)

@dataclasses.dataclass(frozen=True)
class AHDConfig:
    """AHD sizes.

    Attributes:
      num_layers: how many ViT hidden states the AHD receives (the paper: 4, layers
        {1, 8, 16, 32}; `VisionConfig.feature_layers` picks them).
      dim: shared width D; None: the text width D_t (the paper; no text projection).
      mlp_dim: hidden size of each layer's 2-layer MLP; None: the shared width.
      layer_weighting: "softmax" or "free" (see the module docstring).
      input_norm: LayerNorm before each layer's MLP.
      center_text: centre the class features over the classes before normalizing.
      temperature: initial 1 / logit scale (CLIP's 0.07); max_logit_scale clips exp(log_scale).
      dtype: compute dtype ("float32" or "bfloat16"); similarities and softmax are float32.
      context: temporal size k of a depthwise k x 3 x 3 (tubelets x patch rows x columns)
        convolution inside each layer's MLP, added to its hidden features; 0 = none (the
        paper: every patch on its own).
      grid: the patch grid (h, w) each tubelet's N = h x w patches lie on; None: square
        (`TVADConfig.for_backbone` sets the backbone's, e.g. Qwen2.5-VL's aspect-keeping
        frames).
    """

    num_layers: int = 4
    dim: int | None = None
    mlp_dim: int | None = None
    layer_weighting: str = "softmax"
    input_norm: bool = True
    center_text: bool = True
    temperature: float = 0.07
    max_logit_scale: float = 100.0
    dtype: str = "float32"
    context: int = 0
    grid: tuple[int, int] | None = None

    def __post_init__(self):
        if self.num_layers < 1:
            raise ValueError("num_layers must be >= 1")
        if self.context < 0 or (self.context and self.context % 2 == 0):
            raise ValueError(f"context must be 0 or an odd size, got {self.context}")
        if self.layer_weighting not in ("softmax", "free"):
            raise ValueError(f"layer_weighting must be 'softmax' or 'free', "
                             f"got {self.layer_weighting!r}")
        if not 0 < self.temperature:
            raise ValueError("temperature must be positive")


@flax.struct.dataclass
class AHDOutput:
    """Outputs of `AHD` (a pytree)."""

    similarity: jax.Array   # [B, T', h, w, 2] H_c of eq. 6 (weighted cosines, unscaled)
    logits: jax.Array       # [B, T', h, w, 2] logit_scale * H_c (the softmax's input)
    probs: jax.Array        # [B, T', h, w, 2] eq. 7 softmax over classes
    heatmap: jax.Array      # [B, T', h, w] probs[..., 1], the anomaly heatmap H
    per_layer: jax.Array    # [num_layers, B, T', h, w, 2] h^i_c of eq. 5


def patch_grid(hidden: jax.Array, grid: tuple[int, int] | None = None) -> jax.Array:
    """ViT hidden state [B, T', 1+N, D_v] -> patch tokens [B, T', h, w, D_v] (CLS dropped).
    grid (h, w) defaults to a square sqrt(N) x sqrt(N)."""
    B, T, n1, D = hidden.shape
    N = n1 - 1
    if grid is None:
        s = math.isqrt(N)
        if s * s != N:
            raise ValueError(f"{N} patches are not a square grid; give the AHD its grid (h, w)")
        grid = (s, s)
    if grid[0] * grid[1] != N:
        raise ValueError(f"grid {grid} does not hold {N} patches")
    return hidden[:, :, 1:].reshape(B, T, grid[0], grid[1], D)


def _normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, -1, keepdims=True), eps * eps))


class AHD(nn.Module):
    """Anomaly Heatmap Decoder (see the module docstring).

    Attributes:
      cfg: the `AHDConfig`.

    Params: per layer i, norm_<i> (with input_norm), fc1_<i> [D_v, F] and fc2_<i> [F, D];
    text_proj/kernel [D_t, D] when cfg.dim is set; layer_weights [num_layers]; log_scale [].
    Call: (hidden: sequence of num_layers [B, T', 1+N, D_v], text [2, D_t] or [B, 2, D_t])
    -> `AHDOutput`.
    """

    cfg: AHDConfig

    @nn.compact
    def __call__(self, hidden: Sequence[jax.Array], text: jax.Array) -> AHDOutput:
        cfg = self.cfg
        dtype = dtype_of(cfg.dtype)
        if len(hidden) != cfg.num_layers:
            raise ValueError(f"got {len(hidden)} hidden states, cfg.num_layers={cfg.num_layers}")
        text = text.astype(jnp.float32)
        if cfg.dim is not None:
            text = L.Dense(cfg.dim, use_bias=False, dtype=jnp.float32,
                           kernel_init=L.kernel_init((None, "embed")), name="text_proj")(text)
        dim = text.shape[-1]
        if cfg.center_text:
            text = text - text.mean(axis=-2, keepdims=True)
        text = _normalize(text)                                         # [B,] C, D
        eq = "bthwd,cd->bthwc" if text.ndim == 2 else "bthwd,bcd->bthwc"

        sims = []
        for i, h in enumerate(hidden):
            x = patch_grid(h, cfg.grid).astype(dtype)                    # B, T', h, w, D_v
            if cfg.input_norm:
                x = L.layer_norm(1e-5, dtype, name=f"norm_{i}")(x)
            x = L.Dense(cfg.mlp_dim or dim, dtype=dtype,
                        kernel_init=L.kernel_init(("embed", "mlp")), name=f"fc1_{i}")(x)
            x = nn.gelu(x, approximate=False)
            if cfg.context:
                near = L.DepthwiseConv((cfg.context, 3, 3), dtype=dtype,
                                       name=f"context_{i}")(x)
                x = x + nn.gelu(near, approximate=False)
            x = L.Dense(dim, dtype=dtype, kernel_init=L.kernel_init(("mlp", "embed")),
                        name=f"fc2_{i}")(x)
            sims.append(jnp.einsum(eq, _normalize(x), text))             # eq. 5
        per_layer = jnp.stack(sims)                                      # I, B, T', h, w, C

        n = cfg.num_layers
        if cfg.layer_weighting == "softmax":
            raw = self.param("layer_weights", nn.initializers.zeros_init(), (n,), jnp.float32)
            weights = jax.nn.softmax(raw)
        else:
            weights = self.param("layer_weights", nn.initializers.constant(1.0 / n), (n,),
                                 jnp.float32)
        similarity = jnp.einsum("i,i...->...", weights, per_layer)         # eq. 6
        log_scale = self.param("log_scale", nn.initializers.constant(-math.log(cfg.temperature)),
                               (), jnp.float32)
        scale = jnp.minimum(jnp.exp(log_scale), cfg.max_logit_scale)
        logits = scale * similarity
        probs = jax.nn.softmax(logits, axis=-1)                            # eq. 7
        return AHDOutput(similarity=similarity, logits=logits, probs=probs,
                         heatmap=probs[..., 1], per_layer=per_layer)


# ---------------------------------------------------------------------------------------------
# Resolution changes and the loss

def upsample(heatmap: jax.Array, size: tuple[int, int], tubelet: int = 1) -> jax.Array:
    """Heatmap [B, T', h, w] (or [..., h, w]) -> [..., H, W] by bilinear resize
    (`jax.image.resize`, half-pixel centres, antialiased when shrinking). tubelet > 1 also
    repeats each tubelet over its frames on axis 1: [B, T'*tubelet, H, W]."""
    out = jax.image.resize(heatmap.astype(jnp.float32), heatmap.shape[:-2] + tuple(size),
                           method="bilinear")
    return jnp.repeat(out, tubelet, axis=1) if tubelet > 1 else out


def patch_targets(masks: jax.Array, grid: tuple[int, int], mode: str = "area") -> jax.Array:
    """Tubelet masks [..., H, W] (e.g. batch["tubelet_masks"], already the max over each
    tubelet's 2 frames) -> targets [..., h, w] in [0, 1] at patch resolution.

    mode "area": the anomalous fraction of each patch (a soft target; mean pooling);
    "max": 1 where any pixel of the patch is anomalous. H, W must be multiples of h, w.
    """
    H, W = masks.shape[-2:]
    h, w = grid
    if H % h or W % w:
        raise ValueError(f"mask size {(H, W)} is not a multiple of the grid {grid}")
    m = (masks > 0).astype(jnp.float32).reshape(masks.shape[:-2] + (h, H // h, w, W // w))
    if mode == "area":
        return m.mean(axis=(-3, -1))
    if mode == "max":
        return m.max(axis=(-3, -1))
    raise ValueError(f"mode must be 'area' or 'max', got {mode!r}")


def pixel_loss(logits: jax.Array, targets: jax.Array, valid: jax.Array | None = None,
               abnormal_weight: float = 1.0, focal_gamma: float = 0.0) -> jax.Array:
    """Cross-entropy of the 2-class maps against (soft) abnormal targets, averaged over cells.

    logits [B, T', h, w, 2] (`AHDOutput.logits`), targets [B, T', h, w] in [0, 1] (the
    abnormal probability), valid: optional mask broadcastable to [B, T', h, w] (e.g. [B, T']
    padded tubelets as [B, T', 1, 1]); the mean runs over valid cells only.

        loss = -(a (1 - p)^g y log p + p^g (1 - y) log(1 - p)),   p = p_abnormal

    a = `abnormal_weight`, g = `focal_gamma`: a = 1, g = 0 is the paper's pixel cross-entropy;
    a > 1 weighs the rare abnormal cells up (class-balanced CE), g > 0 is the focal loss (cells
    already classified well count less).
    """
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    y = targets.astype(jnp.float32)
    p = jnp.exp(logp[..., 1])
    positive, negative = y * logp[..., 1], (1.0 - y) * logp[..., 0]
    if focal_gamma:
        positive, negative = (1.0 - p) ** focal_gamma * positive, p ** focal_gamma * negative
    return _valid_mean(-(abnormal_weight * positive + negative), valid)


def frame_loss(logits: jax.Array, targets: jax.Array, valid: jax.Array | None = None
               ) -> jax.Array:
    """Cross-entropy of each tubelet's warmest cell against whether any of its cells is
    abnormal, averaged over tubelets. Not in the paper: the frame score every evaluation
    ranks is the heat's maximum over the frame, which the per-cell loss never sees (a normal
    video's warmest patch may sit at an anomalous object's level).

    logits [B, T', h, w, 2], targets [B, T', h, w] in [0, 1], valid: optional mask
    broadcastable to [B, T', 1, 1] (as for `pixel_loss`).
    """
    x = logits.astype(jnp.float32)
    odds = (x[..., 1] - x[..., 0]).reshape(*x.shape[:2], -1).max(-1)      # [B, T'] log-odds
    y = (targets.reshape(*targets.shape[:2], -1).max(-1) > 0).astype(jnp.float32)
    ce = optax.sigmoid_binary_cross_entropy(odds, y)                     # -log p of the max
    return _valid_mean(ce[..., None, None], valid)


def _valid_mean(x: jax.Array, valid: jax.Array | None) -> jax.Array:
    """Mean of x over the entries where `valid` (broadcast to x's shape) is set; all of x
    without it."""
    if valid is None:
        return x.mean()
    v = jnp.broadcast_to(valid.astype(jnp.float32), x.shape)
    return (x * v).sum() / jnp.maximum(v.sum(), 1.0)
