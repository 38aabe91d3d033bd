"""The yes/no judgment teacher-forced: after the judgment question, the decoder's
log p("Yes") - log p("No") at the token where the two answers first differ.

One number per video whose sign says which of the two answers the decoder prefers and whose
order ranks the videos (AUC): phase B's validation reads it to choose a checkpoint by the
judgment (`eval.metrics.judgment_scores`), `experiments/tvad_judgment.py` to ask where the
judgment's evidence goes.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tvad_jax.data.annotate import JUDGMENT_QUESTION
from tvad_jax.data.dialogues import turn_tokens
from tvad_jax.models.tvad import TVADConfig, text_logits


class JudgmentPrompt(NamedTuple):
    """The judgment question's turn and the answers' shared start (ids [L]), then the first
    token of "Yes." and of "No." after it."""
    ids: np.ndarray
    yes: int
    no: int


def judgment_prompt(tokenizer) -> JudgmentPrompt:
    """The teacher-forced prompt of `judgment_gap` in the tokenizer's chat format."""
    prompt, yes = turn_tokens(tokenizer, JUDGMENT_QUESTION, "Yes.")
    _, no = turn_tokens(tokenizer, JUDGMENT_QUESTION, "No.")
    decide = next(i for i, (a, b) in enumerate(zip(yes, no)) if a != b)
    return JudgmentPrompt(np.asarray(prompt + yes[:decide], np.int32), yes[decide], no[decide])


def judgment_gap(cfg: TVADConfig, bcfg, decoder_params, rae_params, special,
                 visual: jax.Array, maps: jax.Array | None, prompt: JudgmentPrompt,
                 lora: dict | None = None, prefix: Sequence[int] = ()) -> jax.Array:
    """log p(Yes) - log p(No) [B] of B videos (visual [B, S_v, D], maps [B, T', h, w, 2] or
    None; the arguments of `models.tvad.text_logits`)."""
    ids = jnp.broadcast_to(jnp.asarray(prompt.ids), (visual.shape[0], len(prompt.ids)))
    lengths = jnp.full((visual.shape[0],), len(prompt.ids), jnp.int32)
    logits = text_logits(cfg, bcfg, decoder_params, rae_params, special, visual, maps, ids,
                         lengths, lora, prefix)
    logp = jax.nn.log_softmax(logits[:, -1].astype(jnp.float32))    # predicts the deciding token
    return logp[:, prompt.yes] - logp[:, prompt.no]
