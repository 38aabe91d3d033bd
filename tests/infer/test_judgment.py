"""The teacher-forced judgment: its prompt stops where "Yes." and "No." part, and its gap is
the two answers' log-probabilities there, read off the logits of the whole answer."""
import jax
import jax.numpy as jnp
import numpy as np

from tvad_jax.data.annotate import JUDGMENT_QUESTION
from tvad_jax.data.dialogues import chat_format, turn_tokens
from tvad_jax.infer.judgment import judgment_gap, judgment_prompt
from tvad_jax.models.tvad import load_frozen_backbone, plain_model, text_logits


def test_judgment_gap_is_the_answers_log_probability_where_they_part(tiny_backbone):
    cfg, directory = tiny_backbone
    backbone = load_frozen_backbone(directory)
    model = plain_model(backbone, cfg.tvad.model, cfg.tvad.stage1.view, cfg.tvad.stage2.view)
    tokenizer, bcfg = backbone.tokenizer, backbone.cfg
    prompt = judgment_prompt(tokenizer)
    question, yes = turn_tokens(tokenizer, JUDGMENT_QUESTION, "Yes.")
    _, no = turn_tokens(tokenizer, JUDGMENT_QUESTION, "No.")
    shared = len(prompt.ids) - len(question)
    assert list(prompt.ids) == question + yes[:shared] and yes[:shared] == no[:shared]
    assert (prompt.yes, prompt.no) == (yes[shared], no[shared]) and prompt.yes != prompt.no

    visual_tokens = 4
    visual = jax.random.normal(jax.random.key(0), (3, visual_tokens, bcfg.decoder.width))
    prefix = chat_format(tokenizer).prefix
    decoder = backbone.params["decoder"]
    gap = judgment_gap(model.cfg, bcfg, decoder, None, None, visual, None, prompt, prefix=prefix)
    # the whole "Yes." answer teacher-forced: the logits before its deciding token
    ids = jnp.asarray([question + yes] * 3, jnp.int32)
    logits = text_logits(model.cfg, bcfg, decoder, None, None, visual, None, ids,
                         jnp.full((3,), ids.shape[1]), prefix=prefix)
    logp = jax.nn.log_softmax(logits[:, len(prompt.ids) - 1].astype(jnp.float32))
    np.testing.assert_allclose(gap, logp[:, prompt.yes] - logp[:, prompt.no], rtol=1e-5,
                               atol=1e-5)
    assert np.ptp(np.asarray(gap)) > 0   # three videos, three judgments
