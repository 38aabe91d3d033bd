import jax
import jax.numpy as jnp
import numpy as np

from tvad_jax.models.losses import contrastive_loss, lm_loss


def test_contrastive_loss_matches_numpy_with_shared_captions():
    rng = np.random.default_rng(0)
    video, text = rng.normal(size=(4, 8)), rng.normal(size=(4, 8))
    captions = np.array([[1, 2], [3, 4], [1, 2], [5, 6]])     # rows 0 and 2 share a caption
    loss, _ = contrastive_loss(jnp.asarray(video), jnp.asarray(text), jnp.log(10.0),
                               jnp.asarray(captions))
    v = video / np.linalg.norm(video, axis=1, keepdims=True)
    t = text / np.linalg.norm(text, axis=1, keepdims=True)
    logits = 10.0 * v @ t.T
    same = (captions[:, None] == captions[None]).all(-1).astype(float)
    target = same / same.sum(1, keepdims=True)

    def xent(x):
        logp = x - np.log(np.exp(x).sum(1, keepdims=True))
        return -(target * logp).sum(1).mean()

    np.testing.assert_allclose(float(loss), (xent(logits) + xent(logits.T)) / 2, rtol=1e-5)


def test_lm_loss_averages_answer_tokens():
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3, 5)), jnp.float32)
    targets = jnp.asarray([[-1, 2, 4], [1, -1, -1]])
    logp = jax.nn.log_softmax(logits)
    expected = -(logp[0, 1, 2] + logp[0, 2, 4] + logp[1, 0, 1]) / 3
    np.testing.assert_allclose(float(lm_loss(logits, targets)), float(expected), rtol=1e-6)
