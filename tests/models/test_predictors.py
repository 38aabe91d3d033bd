"""Paper 004 Table 2's predictors (S3M, Transformer, RNN): one contract, causal, all trainable.

On a 2-core CPU compiling dominates these tests, so each kind runs two compiled programs, a
probe (init, forward, backward, captured activations) and a training loop, compiled two at a
time while the next is traced; the tests read their results.
"""
import concurrent.futures
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tvad_jax.models import predictors
from tvad_jax.models.s3m import S3MConfig, mse_loss

D, LAYERS, PAST, FUTURE = 16, 2, 6, 2
CFG = S3MConfig(width=D, num_layers=LAYERS, past=PAST, future=FUTURE)
KINDS = predictors.PREDICTORS
# XLA's RngBitGenerator: the Transformer's init compiles in a quarter of threefry's time.
KEY = jax.random.key(0, impl="unsafe_rbg")
# XLA's lowest CPU optimization level (as tests/benchmarks/test_bench_device.py): about 30%
# less compile time here.
fast_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
TRAIN_STEPS = 60


def past_batch(seed, shape=(5,)):
    return np.random.default_rng(seed).standard_normal(shape + (PAST, D)).astype(np.float32)


X = past_batch(3)  # (5, L_p, D)
K = 3  # the causality check changes steps >= K
LATE = X.copy()
LATE[:, K:] += np.random.default_rng(5).standard_normal(LATE[:, K:].shape)
# the oldest step changed, not by a constant over the channels (the first pre-norm removes that)
FIRST = X.copy()
FIRST[:, 0] += np.random.default_rng(7).standard_normal(FIRST[:, 0].shape)
BOTH = np.concatenate([X, FIRST])  # (10, L_p, D)
LEADING = BOTH[:6].reshape(2, 3, PAST, D)  # batch dims (2, 3)


def drift(seed, n):
    """Linear drift x_t = x_0 + t v in a fixed 2-d plane of the D-d embedding space:
    past (n, L_p, D) and future (n, L_f, D)."""
    plane = np.random.default_rng(0).standard_normal((2, D)) / np.sqrt(2)
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-1, 1, (n, 1, 2))
    v = 0.2 * rng.standard_normal((n, 1, 2))
    t = np.arange(PAST + FUTURE)[None, :, None]
    seq = ((x0 + t * v) @ plane).astype(np.float32)
    return seq[:, :PAST], seq[:, PAST:]


TRAIN_X, TRAIN_Y = drift(7, 128)
TEST_X, TEST_Y = drift(8, 256)


def with_random_head(params, seed=1, scale=0.3):
    """The params with the zero-initialized head replaced by a random one."""
    head = params["params"]["head"]
    rng = np.random.default_rng(seed)
    head = {name: scale * rng.standard_normal(v.shape).astype(np.float32)
            for name, v in head.items()}
    return {**params, "params": {**params["params"], "head": head}}


def sequence_activations(model, params, x):
    """The prediction for x (2 B, L_p, D) and every activation the model computes over the L_p
    positions for x's halves: ({path: (B, L_p, ...)} for the first B, the same for the rest)."""
    out, state = model.apply(params, x, capture_intermediates=lambda mdl, _: not isinstance(
        mdl, nn.GRUCell))  # a cell's per-step outputs live inside the RNN's scan
    leaves = jax.tree_util.tree_flatten_with_path(state["intermediates"])[0]
    acts = {jax.tree_util.keystr(path): v for path, v in leaves
            if v.ndim >= 3 and v.shape[:2] == x.shape[:2]}
    half = len(x) // 2
    return (out[:half], {path: v[:half] for path, v in acts.items()},
            {path: v[half:] for path, v in acts.items()})


def probe_program(model):
    """key -> (init params, every forward/backward result the contract tests read)."""
    def probe(key):
        params = model.init(key, X)
        untrained, before, after = sequence_activations(model, params, np.concatenate([X, LATE]))
        apply = functools.partial(model.apply, with_random_head(params))  # predicts changes

        def energy(z):
            pred = apply(z)
            return jnp.sum(pred ** 2), pred

        (_, both), grad = jax.value_and_grad(energy, has_aux=True)(BOTH)
        return params, {"untrained": untrained, "before": before, "after": after,
                        "both": both, "grad": grad[:5], "leading": apply(LEADING),
                        "single": apply(LEADING[1, 2])}
    return probe


def train_program(model):
    """params -> (training losses, held-out MSE after TRAIN_STEPS Adam steps on the drift)."""
    opt = optax.adam(1e-2)

    def train(params):
        def step(carry, _):
            params, state = carry
            loss, grads = jax.value_and_grad(
                lambda p: mse_loss(model.apply(p, TRAIN_X), TRAIN_Y))(params)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), loss

        (params, _), losses = jax.lax.scan(step, (params, opt.init(params)),
                                           length=TRAIN_STEPS)
        return losses, mse_loss(model.apply(params, TEST_X), TEST_Y)
    return train


@pytest.fixture(scope="module")
def runs():
    """{kind: (probe outputs, training losses, held-out MSE)}, as numpy."""
    # XLA compiles without holding the GIL: two programs at a time, beside the next tracing
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        compiling = []
        for kind in KINDS:
            model = predictors.predictor(kind, CFG)
            abstract = jax.eval_shape(model.init, KEY, X)
            for program, arg in ((probe_program, KEY), (train_program, abstract)):
                compiling.append(pool.submit(fast_jit(program(model)).lower(arg).compile))
        compiled = [future.result() for future in compiling]
    results = {}
    for kind, probe, train in zip(KINDS, compiled[::2], compiled[1::2]):
        params, out = probe(KEY)
        losses, test_mse = train(params)
        results[kind] = jax.tree_util.tree_map(np.asarray, (out, losses, test_mse))
    return results


def test_predictor_kinds():
    assert isinstance(predictors.predictor("s3m", CFG), predictors.S3M)
    assert isinstance(predictors.predictor("transformer", CFG), predictors.TransformerPredictor)
    assert isinstance(predictors.predictor("rnn", CFG), predictors.RNNPredictor)
    with pytest.raises(ValueError, match=r"'bad'.*s3m, transformer, rnn"):
        predictors.predictor("bad", CFG)


def test_transformer_needs_config_past_and_width():
    model = predictors.TransformerPredictor(CFG)
    for shape in [(3, PAST + 1, D), (3, PAST, D + 4)]:
        with pytest.raises(ValueError, match=r"expected \(\.\.\., 6, 16\) \(L_p, D\)"):
            jax.eval_shape(model.init, KEY, jax.ShapeDtypeStruct(shape, jnp.float32))
    with pytest.raises(ValueError, match="not a multiple of 3 heads"):
        jax.eval_shape(predictors.TransformerPredictor(CFG, heads=3).init, KEY, X)


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_leading_dims(runs, kind):
    out = runs[kind][0]
    assert out["leading"].shape == (2, 3, FUTURE, D)
    np.testing.assert_allclose(out["leading"].reshape(6, FUTURE, D), out["both"][:6],
                               rtol=1e-5, atol=1e-5)
    assert out["single"].shape == (FUTURE, D)  # no batch dims at all
    np.testing.assert_allclose(out["single"], out["leading"][1, 2], rtol=1e-5, atol=1e-5)
    # the random head does predict changes
    assert np.abs(out["leading"] - LEADING[..., -1:, :]).max() > 1e-2


@pytest.mark.parametrize("kind", KINDS)
def test_untrained_predicts_last_embedding(runs, kind):
    out = runs[kind][0]
    assert out["untrained"].shape == (5, FUTURE, D)
    np.testing.assert_array_equal(out["untrained"], np.repeat(X[:, -1:], FUTURE, axis=1))


@pytest.mark.parametrize("kind", KINDS)
def test_causal(runs, kind):
    """Changing steps >= K leaves every activation at positions < K as it was, and changes
    the last sequence layer's output at every position >= K."""
    out = runs[kind][0]
    before, after = out["before"], out["after"]
    last = {"s3m": "['layer_0']['__call__'][0]",  # S3M's last layer returns only the end
            "transformer": f"['block_{LAYERS - 1}']['forward'][0]",
            "rnn": f"['gru_{LAYERS - 1}']['__call__'][0]"}[kind]
    assert last in before and len(before) >= 3, sorted(before)
    for path in before:
        np.testing.assert_allclose(after[path][:, :K], before[path][:, :K], atol=1e-5,
                                   err_msg=path)
    assert np.abs(after[last][:, K:] - before[last][:, K:]).max(axis=-1).min() > 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_output_depends_on_every_past_step(runs, kind):
    out = runs[kind][0]
    per_step = np.abs(out["grad"]).sum(axis=(0, 2))  # (L_p,)
    assert per_step.shape == (PAST,)
    assert np.all(per_step > 1e-3 * per_step.max()), per_step
    moved = out["both"][5:] - out["both"][:5]  # FIRST against X: only the oldest step differs
    assert np.abs(moved).max() > 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_learns_linear_drift(runs, kind):
    """60 Adam steps on 128 tracks bring the held-out MSE under a fifth of copying the last
    embedding (measured: about 1/100 to 1/25)."""
    _, losses, test_mse = runs[kind]
    copy_last = float(np.mean((TEST_Y - TEST_X[:, -1:]) ** 2))
    print(f"{kind}: copy-last MSE {copy_last:.4f} -> trained {float(test_mse):.4f} "
          f"(train loss {float(losses[0]):.4f} -> {float(losses[-1]):.4f})")
    assert losses.shape == (TRAIN_STEPS,)
    # the first step's loss is the untrained model's: copying the last embedding
    assert float(losses[0]) == pytest.approx(
        float(np.mean((TRAIN_Y - TRAIN_X[:, -1:]) ** 2)), rel=1e-4)
    assert float(test_mse) < 0.2 * copy_last, (copy_last, float(test_mse))


def abstract_counts(cfg):
    x = jax.ShapeDtypeStruct((cfg.past, cfg.width), jnp.float32)
    return {kind: predictors.param_count(jax.eval_shape(
        predictors.predictor(kind, cfg).init, KEY, x)) for kind in KINDS}


def test_param_count():
    params = {"a": {"kernel": np.zeros((3, 4)), "bias": np.zeros(4)}, "b": np.zeros(())}
    assert predictors.param_count(params) == 17


def test_param_counts_comparable():
    counts = abstract_counts(CFG)
    print(f"param counts (D {D}, {LAYERS} layers, P {CFG.state_size}):", counts)
    assert max(counts.values()) < 3 * min(counts.values()), counts


def test_documented_param_counts():
    """The counts the module docstring states (D 64, 3 layers, L_p 8, L_f 2, P 64)."""
    counts = abstract_counts(S3MConfig(width=64, num_layers=3, past=8, future=2))
    print("param counts (D 64, 3 layers, P 64):", counts)
    assert counts == {"s3m": 33_792, "transformer": 109_376, "rnn": 83_328}
    assert "S3M 33,792, Transformer 109,376, RNN 83,328" in " ".join(
        predictors.__doc__.split())
