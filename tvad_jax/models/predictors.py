"""The sequence predictors of paper 004's Table 2: S3M against a Transformer and an RNN.

Paper 004 (VLAVAD, §4.3, Table 2) swaps its Sequence State Space Module for a Transformer and
an RNN "of the same task" and reports that S3M generalizes best. All three here share S3M's
contract (`models.s3m.S3M`): the past L_p per-object embeddings (..., L_p, D) in, the next L_f
(..., L_f, D) out, any leading batch dims. Each reads one summary vector of the past (the last
position of its stack), LayerNorms it, and a zero-initialized Dense head predicts the L_f
changes from the last observed embedding, so an untrained model predicts "nothing changes".

* "s3m": `models.s3m.S3M` (HiPPO-LegT memory layers).
* "transformer": `TransformerPredictor`, a pre-norm causal Transformer encoder
  (`models.layers.EncoderBlock`: self-attention through `models.attention.attention`, GELU
  MLP of 2D) over learned positional embeddings of the L_p steps.
* "rnn": `RNNPredictor`, stacked GRUs with pre-norm residual connections.

The three take the same `S3MConfig` and use its width D and depth `num_layers` (S3M also its
state size P), so the comparison is at the same width and depth and at parameter counts of
the same order. Measured at D 64, 3 layers, L_p 8, L_f 2, P 64 (the default): S3M 33,792,
Transformer 109,376, RNN 83,328 parameters (`param_count`). Per layer S3M carries D P + D^2,
the GRU 6 D^2 and the Transformer block 8 D^2 (4 D^2 attention, 4 D^2 MLP), and all share the
L_f D^2 head; S3M's D P does not grow as D^2, so the others' lead widens with D: at paper
004's ShanghaiTech size (D 512, L_p 20, L_f 4) the counts are 1.94 M, 7.37 M and 5.78 M.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax

from tvad_jax.models import layers
from tvad_jax.models.s3m import S3M, S3MConfig

PREDICTORS = ("s3m", "transformer", "rnn")


def _flat(x):
    """(..., L, D) -> (B, L, D) with B the product of the leading dims (1 if none)."""
    return x.reshape((-1,) + x.shape[-2:])


def _delta_head(cfg: S3MConfig, summary, past):
    """summary (B, D) -> LayerNorm -> zero-init Dense -> L_f deltas added to past[..., -1, :].

    Called inside a compact `__call__`; returns (..., L_f, D) with `past`'s leading dims."""
    h = nn.LayerNorm(name="norm")(summary)
    delta = layers.Dense(cfg.future * cfg.width, kernel_init=nn.initializers.zeros,
                     name="head")(h)
    delta = delta.reshape(past.shape[:-2] + (cfg.future, cfg.width))  # (..., L_f, D)
    return past[..., -1:, :] + delta


class TransformerPredictor(nn.Module):
    """Pre-norm causal Transformer encoder (num_layers blocks: self-attention with `heads`
    heads + GELU MLP of 2x width), learned positional embeddings over L_p, reads the last
    position -> LayerNorm -> Dense head (zero init) predicting L_f deltas added to the last
    observed embedding (same output contract as models.s3m.S3M).

    Past (..., L_p, D) -> (..., L_f, D); L_p must be `config.past` (the positional table's
    length) and D `config.width`, a multiple of `heads`."""

    config: S3MConfig
    heads: int = 4

    @nn.compact
    def __call__(self, past):
        cfg = self.config
        L, D = past.shape[-2:]
        if L != cfg.past or D != cfg.width:
            raise ValueError(f"TransformerPredictor: past of shape {past.shape}, expected "
                             f"(..., {cfg.past}, {cfg.width}) (L_p, D)")
        if D % self.heads:
            raise ValueError(f"TransformerPredictor: width {D} is not a multiple of "
                             f"{self.heads} heads")
        pos = self.param("pos", nn.initializers.normal(0.02), (L, D))
        x = _flat(past) + pos  # (B, L_p, D)
        for i in range(cfg.num_layers):
            block = layers.EncoderBlock(D, self.heads, 2 * D, activation="gelu_tanh",
                                        causal=True, name=f"block_{i}")
            x = block.forward(x, None)  # (B, L_p, D)
        return _delta_head(cfg, x[:, -1], past)


class RNNPredictor(nn.Module):
    """num_layers stacked GRUs (flax.linen.RNN over nn.GRUCell, width D) with residual
    connections and pre-norm; last step -> LayerNorm -> zero-init Dense head -> L_f deltas
    added to the last observed embedding.

    Past (..., L_p, D) -> (..., L_f, D); any L_p, D must be `config.width`."""

    config: S3MConfig

    @nn.compact
    def __call__(self, past):
        cfg = self.config
        if past.shape[-1] != cfg.width:
            raise ValueError(f"RNNPredictor: past of shape {past.shape}, expected width "
                             f"{cfg.width} (D)")
        x = _flat(past)  # (B, L_p, D)
        for i in range(cfg.num_layers):
            h = nn.LayerNorm(name=f"norm_{i}")(x)
            x = x + nn.RNN(nn.GRUCell(cfg.width), name=f"gru_{i}")(h)  # (B, L_p, D)
        return _delta_head(cfg, x[:, -1], past)


def predictor(kind: str, config: S3MConfig, **module_kwargs) -> nn.Module:
    """The sequence predictor of `kind` (PREDICTORS): models.s3m.S3M for "s3m"; ValueError
    naming the kind and the choices otherwise. `module_kwargs` (e.g. name=...) go to the
    module's constructor."""
    if kind == "s3m":
        return S3M(config, **module_kwargs)
    if kind == "transformer":
        return TransformerPredictor(config, **module_kwargs)
    if kind == "rnn":
        return RNNPredictor(config, **module_kwargs)
    raise ValueError(f"predictor kind {kind!r}: expected one of {', '.join(PREDICTORS)}")


class TrackPredictor(nn.Module):
    """Per-step features (..., L_p, F) -> predicted features (..., L_f, F) through a
    predictor of `kind` at width D: a linear embedding to D, the predictor, and a linear
    read-out of its predicted change added to the last observed step (the box-track S3M's
    6 box features, VLAVAD's answer embeddings)."""

    config: S3MConfig
    features: int
    kind: str = "s3m"

    @nn.compact
    def __call__(self, past):  # (..., L_p, F) -> (..., L_f, F)
        emb = layers.Dense(self.config.width, name="embed")(past)  # (..., L_p, D)
        out = predictor(self.kind, self.config, name=self.kind)(emb)  # (..., L_f, D)
        delta = layers.Dense(self.features, name="readout")(out - emb[..., -1:, :])  # ..., L_f, F
        return past[..., -1:, :] + delta


def param_count(params) -> int:
    """Number of scalars in a params tree (arrays or `jax.eval_shape` structs; boxed
    logical-axis params count their arrays)."""
    return sum(math.prod(getattr(leaf, "shape", ()))
               for leaf in jax.tree_util.tree_leaves(nn.unbox(params)))
