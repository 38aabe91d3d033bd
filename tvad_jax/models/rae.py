"""Region-aware Anomaly Encoder (paper 000 §3.2.2, eqs. 8-13): heatmaps -> decoder prompts.

    rae = RAE(RAEConfig(dim=decoder_width))
    p_an = rae.apply({"params": p}, maps)         # maps [B, T', h, w, 2] -> [B, T'-1, K, D]
    embeds = assemble_prompt(p_v, p_an, p_q, special=specials)   # [B, S, D] (eq. 13)

Letters: B batch, T' tubelets, h, w the patch grid, C_h conv width, D decoder width,
K = N_base + 9 + 1 prompts per step, G = 3 the region grid.

Eq. 8: X = maps[:, 1:] - maps[:, :-1], T'-1 difference maps of the 2-channel AHD output.
A difference keeps what changes and drops the heat's level: an anomalous object lit through
the whole clip leaves nothing in X. `level=True` (not in the paper) also feeds each step the
maps of its later tubelet, maps[:, 1:], as two more channels: the evidence of a yes/no
judgment.
Eq. 9: `conv_layers` 3x3 SAME convolutions, each followed by GELU, on every step.
Eq. 10: 3x3 adaptive average pooling (PyTorch's AdaptiveAvgPool2d bins: bin i of n covers
[floor(i*h/n), ceil((i+1)*h/n)), so bins overlap when h is not a multiple of n), regions in
row-major order (top-left, top-centre, ..., bottom-right), then a 2-layer MLP shared by the
9 regions. Eq. 11: the spatial mean, then another 2-layer MLP (`global_pool="max"`, not in
the paper: the spatial maximum, so that one hot patch of the grid is not averaged away).
Eq. 12: a learnable base prompt [N_base, D] repeated on every step; per step the prompts are
[base, 9 regions, global].

Which 2-channel map feeds eq. 8 is the caller's choice: the paper writes H_c (eq. 6, before
the softmax; `AHDOutput.similarity` or `.logits`); `AHDOutput.probs` works the same way.
"""
from __future__ import annotations

import dataclasses
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tvad_jax import config as config_lib
from tvad_jax.models import layers as L
from tvad_jax.models.configs import dtype_of

# Eq. 11's pooling of the conv features over the grid: the paper's mean, or the maximum.
GLOBAL_POOLS = {"mean": jnp.mean, "max": jnp.max}


@dataclasses.dataclass(frozen=True)
class RAEConfig:
    """RAE sizes.

    Attributes:
      dim: prompt width D (the decoder's embedding width).
      hidden: conv width C_h.
      conv_layers: number of conv + GELU layers in the backbone (eq. 9).
      kernel_size: conv kernel (square, SAME padding).
      grid: regions per side (3: 9 region prompts).
      num_base: N_base, learnable base prompts per step.
      mlp_dim: hidden size of the region and global MLPs; None: dim.
      level: also feed the heat level beside its temporal difference (see the module
        docstring; False: eq. 8 as printed).
      global_pool: how eq. 11 pools the conv features over the grid, "mean" (the paper)
        or "max" (see the module docstring).
      dtype: compute dtype; params are float32.
    """

    dim: int = 256
    hidden: int = 64
    conv_layers: int = 2
    kernel_size: int = 3
    grid: int = 3
    num_base: int = 4
    mlp_dim: int | None = None
    level: bool = False
    global_pool: Literal["mean", "max"] = "mean"
    dtype: str = "float32"

    def __post_init__(self):
        if self.conv_layers < 1 or self.grid < 1 or self.num_base < 0:
            raise ValueError("conv_layers and grid must be >= 1, num_base >= 0")
        config_lib.check_choice(self, "global_pool", tuple(GLOBAL_POOLS))

    @property
    def prompts_per_step(self) -> int:
        """K = N_base + grid^2 + 1."""
        return self.num_base + self.grid ** 2 + 1


def adaptive_pool_matrix(size: int, bins: int) -> np.ndarray:
    """[bins, size] averaging weights of PyTorch's adaptive average pooling on one axis:
    bin i averages [floor(i*size/bins), ceil((i+1)*size/bins))."""
    m = np.zeros((bins, size), np.float32)
    for i in range(bins):
        start = (i * size) // bins
        end = -((-(i + 1) * size) // bins)
        m[i, start:end] = 1.0 / (end - start)
    return m


def adaptive_avg_pool(x: jax.Array, bins: tuple[int, int]) -> jax.Array:
    """x [..., h, w, C] -> [..., bins_h, bins_w, C] (PyTorch AdaptiveAvgPool2d), float32."""
    h, w = x.shape[-3:-1]
    ph = jnp.asarray(adaptive_pool_matrix(h, bins[0]))
    pw = jnp.asarray(adaptive_pool_matrix(w, bins[1]))
    return jnp.einsum("ih,jw,...hwc->...ijc", ph, pw, x.astype(jnp.float32))


def motion(maps: jax.Array, level: bool = False) -> jax.Array:
    """Eq. 8: [B, T', h, w, 2] -> [B, T'-1, h, w, 2], maps[t+1] - maps[t]; with `level`
    [B, T'-1, h, w, 4], the difference and maps[t+1]."""
    if maps.shape[1] < 2:
        raise ValueError(f"need at least 2 tubelets for the temporal difference, got {maps.shape}")
    diff = maps[:, 1:] - maps[:, :-1]
    return jnp.concatenate([diff, maps[:, 1:]], axis=-1) if level else diff


class _MLP2(nn.Module):
    hidden: int
    out: int
    dtype: jnp.dtype

    @nn.compact
    def __call__(self, x):
        x = L.Dense(self.hidden, dtype=self.dtype, kernel_init=L.kernel_init((None, "mlp")),
                    name="fc1")(x)
        x = nn.gelu(x, approximate=False)
        return L.Dense(self.out, dtype=self.dtype, kernel_init=L.kernel_init(("mlp", "embed")),
                       name="fc2")(x)


class RAE(nn.Module):
    """Region-aware Anomaly Encoder (see the module docstring).

    Attributes:
      cfg: the `RAEConfig`.

    Params: conv_<i> (kernel [k, k, C_in, C_h], bias), region (fc1, fc2), global (fc1, fc2),
    base [N_base, D].
    Call: maps [B, T', h, w, 2] (with `level`, conv_0 reads 4 channels)
    -> P_An [B, T'-1, N_base + grid^2 + 1, D].
    """

    cfg: RAEConfig

    @nn.compact
    def __call__(self, maps: jax.Array) -> jax.Array:
        cfg = self.cfg
        dtype = dtype_of(cfg.dtype)
        x = motion(maps.astype(jnp.float32), cfg.level)                  # B, T'-1, h, w, c
        B, S, h, w, c = x.shape
        x = x.reshape(B * S, h, w, c).astype(dtype)
        for i in range(cfg.conv_layers):                                 # eq. 9
            x = nn.Conv(cfg.hidden, (cfg.kernel_size, cfg.kernel_size), padding="SAME",
                        dtype=dtype, param_dtype=jnp.float32, name=f"conv_{i}")(x)
            x = nn.gelu(x, approximate=False)
        feats = x.reshape(B, S, h, w, cfg.hidden)
        grid = adaptive_avg_pool(feats, (cfg.grid, cfg.grid))            # B, S, G, G, C_h
        grid = grid.reshape(B, S, cfg.grid ** 2, cfg.hidden).astype(dtype)
        mlp_dim = cfg.mlp_dim or cfg.dim
        region = _MLP2(mlp_dim, cfg.dim, dtype, name="region")(grid)     # eq. 10
        pooled = GLOBAL_POOLS[cfg.global_pool](feats.astype(jnp.float32), axis=(2, 3))
        pooled = pooled[:, :, None].astype(dtype)
        glob = _MLP2(mlp_dim, cfg.dim, dtype, name="global")(pooled)     # eq. 11
        base = self.param("base", L.kernel_init((None, "embed"), stddev=0.02),
                          (cfg.num_base, cfg.dim), jnp.float32)
        base = jnp.broadcast_to(base.astype(dtype), (B, S, cfg.num_base, cfg.dim))
        out = jnp.concatenate([base, region.astype(dtype), glob.astype(dtype)], axis=2)
        return L.constrain(out, ("batch", "tubelets", None, "embed"))    # eq. 12


def prompt_length(visual: int, steps: int, per_step: int, question: int,
                  special: bool = False) -> int:
    """Length S of `assemble_prompt`'s output: visual + steps * per_step + question, plus
    start/end and steps - 1 separators (steps + 1 tokens) when special embeddings are given."""
    return visual + steps * per_step + question + ((steps + 1) if special else 0)


def assemble_prompt(p_v: jax.Array, p_an: jax.Array, p_q: jax.Array,
                    special: jax.Array | None = None) -> jax.Array:
    """Eq. 13: the decoder's input embeddings P = [P_V, P_An, P_Q], flattened to [B, S, D].

    p_v [B, ..., D] visual prompts (any middle axes, flattened in order, e.g. [B, T', N, D]);
    p_an [B, T'-1, K, D] from `RAE`; p_q [B, ..., D] the embedded question/answer history.
    special: optional embeddings of (<anomaly_start>, <anomaly_sep>, <anomaly_end>), [3, D]
    or [B, 3, D] (rows of the decoder's embedding table, e.g. `Decoder.embed` of their ids).
    With them the order is
        P_V, <anomaly_start>, P_An[0], <anomaly_sep>, P_An[1], ..., <anomaly_sep>, P_An[T'-2],
        <anomaly_end>, P_Q
    and without them P_V, P_An[0], ..., P_An[T'-2], P_Q. Length: `prompt_length`.
    Padding of P_Q (and positions/attention masks) is the caller's business.
    """
    B, steps, K, D = p_an.shape
    dtype = p_an.dtype
    p_v = p_v.reshape(B, -1, D).astype(dtype)
    p_q = p_q.reshape(B, -1, D).astype(dtype)
    if special is None:
        middle = p_an.reshape(B, steps * K, D)
    else:
        special = jnp.broadcast_to(special.astype(dtype), (B, 3, D))
        start, sep, end = special[:, 0:1], special[:, 1:2], special[:, 2:3]
        seps = jnp.broadcast_to(sep[:, None], (B, steps, 1, D))          # a sep after each step
        body = jnp.concatenate([p_an, seps], axis=2).reshape(B, steps * (K + 1), D)
        middle = jnp.concatenate([start, body[:, :-1], end], axis=1)     # last sep -> end
    return jnp.concatenate([p_v, middle, p_q], axis=1)
