"""VLAVAD's Sequence State Space Module (S3M, paper 004 §3.3.2) and its anomaly scores.

From the last L_p per-object embeddings (512-d in the paper) a stack of state-space layers
predicts the next L_f embeddings; it is trained with MSE on normal tracks only, so its
prediction error at test time is the object's temporal anomaly score. A frame's score is the
maximum over its objects (temporal smoothing is the evaluation's, `eval.metrics.smooth_scores`).

Paper 004 gives 3 layers and L_p/L_f = 10/2 (Avenue, Ped2) or 20/4 (ShanghaiTech), but not
the layer's inside. Ours is an S4-style block with a fixed HiPPO-LegT memory: every channel
keeps P Legendre coefficients of its last L_p inputs (`hippo`), read out by a learnable
C (D, P) and skip D, then a GELU and a position-wise Dense, in a pre-norm residual block.
The memory and read-out are linear, so they fold into one causal kernel K[k] = C Ad^k Bd
(L_p, D), applied by FFT (`hippo.causal_conv`) without materializing the (L, D, P) states;
the last layer only needs the end of the window and takes one weighted sum with the reversed
kernel, the `hippo.final_state` idea. The head predicts the change from the last observed
embedding for each future step.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from tvad_jax import config as config_lib
from tvad_jax.models import hippo, layers


@dataclasses.dataclass(frozen=True)
class S3MConfig:
    """S3M sizes; defaults are paper 004's ShanghaiTech setting."""

    width: int = 512  # D, embedding size
    state_size: int = 64  # P, Legendre coefficients per channel
    num_layers: int = 3
    past: int = 20  # L_p, observed steps
    future: int = 4  # L_f, predicted steps
    measure: str = "legt"  # hippo.transition measure, time scale = L_p
    method: str = "bilinear"  # hippo.discretize method

    def __post_init__(self):
        config_lib.check_at_least(self, 1, "width", "state_size", "num_layers", "past", "future")
        config_lib.check_choice(self, "measure", hippo.MEASURES)
        config_lib.check_choice(self, "method", hippo.METHODS)


class SSMLayer(nn.Module):
    """Pre-norm residual block around a per-channel Legendre memory read out by C and D."""

    state_size: int  # P
    measure: str = "legt"
    method: str = "bilinear"
    last_only: bool = False  # return only the last position

    @nn.compact
    def __call__(self, x):  # x (..., L, D) -> (..., L, D), or (..., D) if last_only
        L, D = x.shape[-2:]
        P = self.state_size
        h = nn.LayerNorm(name="norm")(x)
        Ad, Bd = hippo.discretize(*hippo.transition(self.measure, P, L), 1.0, self.method)
        C = self.param("C", nn.initializers.normal(P ** -0.5), (D, P))
        skip = self.param("D", nn.initializers.ones, (D,))
        K = jnp.einsum("kp,dp->kd", hippo.kernel(Ad, Bd, L), C)  # (L, D): C Ad^k Bd
        if self.last_only:
            y = jnp.einsum("...ld,ld->...d", h, K[::-1]) + skip * h[..., -1, :]
            x = x[..., -1, :]
        else:
            y = hippo.causal_conv(h, K) + skip * h
        return x + layers.Dense(D, name="mix")(nn.gelu(y))


class S3M(nn.Module):
    """Predict the next L_f embeddings (..., L_f, D) from the past L_p (..., L_p, D)."""

    config: S3MConfig = S3MConfig()

    @nn.compact
    def __call__(self, past):
        cfg = self.config
        x = past
        for i in range(cfg.num_layers):
            last = i == cfg.num_layers - 1
            x = SSMLayer(cfg.state_size, cfg.measure, cfg.method, last_only=last,
                         name=f"layer_{i}")(x)  # (..., L_p, D), the last layer (..., D)
        x = nn.LayerNorm(name="norm")(x)
        delta = layers.Dense(cfg.future * cfg.width, kernel_init=nn.initializers.zeros,
                         name="head")(x)
        delta = delta.reshape(x.shape[:-1] + (cfg.future, cfg.width))  # (..., L_f, D)
        return past[..., -1:, :] + delta


def mse_loss(pred, target):
    """Training objective: mean squared error over all predicted embeddings."""
    return jnp.mean((pred - target) ** 2)


def object_scores(pred, target):
    """Anomaly score of each clip (...): its mean squared prediction error."""
    return jnp.mean((pred - target) ** 2, axis=(-2, -1))


def frame_scores(scores, frames, num_frames: int):
    """Frame score = max over the objects scored in that frame; 0 where none is.

    scores (M,) and frames (M,) (int frame index of each score) -> (num_frames,).
    """
    best = jax.ops.segment_max(scores, frames, num_segments=num_frames)
    return jnp.where(jnp.isfinite(best), best, 0.0)
