import jax
import jax.numpy as jnp
import numpy as np

from tvad_jax.models.losses import (balanced_region_patch_loss, contrastive_loss,
                                    grouped_choice_loss, lm_loss)


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


def test_lm_loss_averages_answer_tokens_by_weight():
    logits = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3, 5)), jnp.float32)
    targets = jnp.asarray([[-1, 2, 4], [1, -1, -1]])
    logp = jax.nn.log_softmax(logits)
    expected = -(logp[0, 1, 2] + logp[0, 2, 4] + logp[1, 0, 1]) / 3
    np.testing.assert_allclose(float(lm_loss(logits, targets)), float(expected), rtol=1e-6)
    # weights: a weighted mean over the answer tokens; weights on non-answer positions ignored
    weights = jnp.asarray([[9.0, 2.0, 1.0], [3.0, 7.0, 7.0]])
    weighted = -(2 * logp[0, 1, 2] + logp[0, 2, 4] + 3 * logp[1, 0, 1]) / 6
    np.testing.assert_allclose(float(lm_loss(logits, targets, weights)), float(weighted),
                               rtol=1e-6)


def test_grouped_choice_loss_picks_within_each_group_and_skips_missing_labels():
    rng = np.random.default_rng(2)
    rows, phrases = rng.normal(size=(3, 6)), rng.normal(size=(5, 6))   # groups of 2 and 3
    labels = np.array([[1, 0], [-1, 2], [0, -1]])
    valid = np.array([True, True, False])
    loss, accuracy = grouped_choice_loss(jnp.asarray(rows), jnp.asarray(phrases), jnp.log(5.0),
                                         jnp.asarray(labels), (2, 3), jnp.asarray(valid))
    r = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    p = phrases / np.linalg.norm(phrases, axis=1, keepdims=True)
    logits = 5.0 * r @ p.T
    expected, hits = [], []
    for (lo, hi), g in (((0, 2), 0), ((2, 5), 1)):
        use = [m for m in range(3) if valid[m] and labels[m, g] >= 0]
        group = logits[use, lo:hi]
        logp = group - np.log(np.exp(group).sum(1, keepdims=True))
        expected.append(-np.mean(logp[np.arange(len(use)), labels[use, g]]))
        hits.append(np.mean(group.argmax(1) == labels[use, g]))
    np.testing.assert_allclose(float(loss), np.mean(expected), rtol=1e-5)
    np.testing.assert_allclose(float(accuracy), np.mean(hits), rtol=1e-6)


def test_balanced_region_patch_loss_weighs_each_class_equally_by_coverage():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 2, 3, 4))                 # [B, T, N, C]
    coverage = rng.uniform(size=(2, 2, 2, 3))              # [B, K, T, N]
    coverage[1, 1] = 0.0                                   # a region covering nothing
    labels = np.array([[0, 2], [2, -1]])                   # class 2 twice, 1 and 3 absent
    loss, accuracy = balanced_region_patch_loss(jnp.asarray(logits), jnp.asarray(coverage),
                                                jnp.asarray(labels))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    losses, hits = [], []
    for c in (0, 2):                                       # the classes with covered patches
        nll = hit = mass = 0.0
        for b, k in zip(*np.nonzero(labels == c)):
            w = coverage[b, k]                              # [T, N]
            nll -= (w * logp[b, ..., c]).sum()
            hit += (w * (logits[b].argmax(-1) == c)).sum()
            mass += w.sum()
        losses.append(nll / mass)
        hits.append(hit / mass)
    np.testing.assert_allclose(float(loss), np.mean(losses), rtol=1e-5)
    np.testing.assert_allclose(float(accuracy), np.mean(hits), rtol=1e-5)
