"""S3M checked against a float64 numpy layer, scipy's Gaussian filter, and a toy anomaly."""
import jax
import numpy as np
import optax
import pytest

from tvad_jax.models import s3m

rng = np.random.default_rng(0)


def numpy_layer(params, x, P):
    """SSMLayer in float64: LayerNorm, LegT memory, C/D read-out, tanh-GELU, Dense, residual."""
    p = {k: {n: np.asarray(v, np.float64) for n, v in d.items()} if isinstance(d, dict)
         else np.asarray(d, np.float64) for k, d in params["params"].items()}
    L = x.shape[-2]
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    h = (x - mean) / np.sqrt(var + 1e-6) * p["norm"]["scale"] + p["norm"]["bias"]
    q = np.arange(P)
    n, k = np.meshgrid(q, q, indexing="ij")
    A = -np.sqrt(np.outer(2 * q + 1, 2 * q + 1)) * np.where(k <= n, 1.0, (-1.0) ** (n - k)) / L
    inv = np.linalg.inv(np.eye(P) - A / 2)
    Ad, Bd = inv @ (np.eye(P) + A / 2), inv @ (np.sqrt(2 * q + 1) / L)
    c = np.zeros(h.shape[:-2] + (h.shape[-1], P))
    ys = []
    for l in range(L):
        c = c @ Ad.T + h[..., l, :, None] * Bd
        ys.append(np.einsum("...dp,dp->...d", c, p["C"]) + p["D"] * h[..., l, :])
    y = np.stack(ys, -2)
    gelu = 0.5 * y * (1 + np.tanh(np.sqrt(2 / np.pi) * (y + 0.044715 * y ** 3)))
    return x + gelu @ p["mix"]["kernel"] + p["mix"]["bias"]


@pytest.mark.parametrize("last_only", [False, True])
def test_ssm_layer_matches_numpy(last_only):
    layer = s3m.SSMLayer(state_size=6, last_only=last_only)
    x = rng.standard_normal((3, 10, 5), np.float32)
    params = jax.jit(layer.init)(jax.random.key(0), x)
    got = jax.jit(layer.apply)(params, x)
    expected = numpy_layer(params, x.astype(np.float64), 6)
    if last_only:
        expected = expected[..., -1, :]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_frame_scores_max_over_objects():
    scores = np.array([0.3, 0.9, 0.1, 0.5, 0.2])
    frames = np.array([0, 0, 2, 2, 3])
    expected = [max(scores[frames == t], default=0.0) for t in range(5)]
    np.testing.assert_allclose(s3m.frame_scores(scores, frames, 5), expected, rtol=1e-6)


D, PAST, FUTURE = 8, 10, 2


def toy_tracks(rng, n, speedup_at=None):
    """Embeddings of objects moving at constant speed; optionally 5x faster from a step on."""
    start = rng.uniform(-1, 1, (n, 1, 2))
    angle = rng.uniform(0, 2 * np.pi, (n, 1))
    velocity = np.stack([np.cos(angle), np.sin(angle)], -1) * rng.uniform(0.02, 0.05, (n, 1, 1))
    speed = np.ones((n, PAST + FUTURE, 1))
    if speedup_at is not None:
        speed[:, speedup_at:] = 5.0
    position = start + np.cumsum(speed * velocity, axis=1)  # (n, T, 2)
    features = np.concatenate([position, np.sin(np.pi * position)], -1)
    mix = np.random.default_rng(42).standard_normal((D, 4)) / 2  # a fixed toy "text encoder"
    return np.tanh(features @ mix.T).astype(np.float32)  # (n, T, D)


def test_s3m_learns_normal_motion_and_flags_speed_change():
    rng = np.random.default_rng(3)
    cfg = s3m.S3MConfig(width=D, state_size=8, past=PAST, future=FUTURE)
    train = toy_tracks(rng, 128)
    x, y = train[:, :PAST], train[:, PAST:]
    normal, abnormal = toy_tracks(rng, 64), toy_tracks(rng, 64, speedup_at=PAST)
    model = s3m.S3M(cfg)
    params = jax.jit(model.init)(jax.random.key(0), x)
    assert jax.eval_shape(model.apply, params, x).shape == (128, FUTURE, D)
    score = jax.jit(lambda p, t: s3m.object_scores(model.apply(p, t[:, :PAST]), t[:, PAST:]))
    # The zero-initialized head predicts "the last embedding again".
    hold_last = np.mean((normal[:, PAST:] - normal[:, PAST - 1:PAST]) ** 2, axis=(1, 2))
    np.testing.assert_allclose(score(params, normal), hold_last, rtol=1e-4, atol=1e-9)

    opt = optax.adam(3e-3)

    @jax.jit
    def train(params):  # 200 Adam steps in one compiled loop
        def step(carry, _):
            params, state = carry
            loss, grads = jax.value_and_grad(lambda p: s3m.mse_loss(model.apply(p, x), y))(params)
            updates, state = opt.update(grads, state)
            return (optax.apply_updates(params, updates), state), loss

        (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), length=200)
        return params, losses

    params, losses = train(params)
    assert float(losses[-1]) < float(losses[0]) / 3, (losses[0], losses[-1])

    normal_scores = np.asarray(score(params, normal))
    abnormal_scores = np.asarray(score(params, abnormal))
    auc = np.mean(abnormal_scores[:, None] > normal_scores[None, :])
    assert auc > 0.95, auc
    assert np.median(abnormal_scores) > 10 * np.median(normal_scores)
