"""SMM checked against a float64 numpy transcription of paper 003 eqs. 3-6 and Algorithm 2."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.special import eval_legendre

from tvad_jax.models import smm

rng = np.random.default_rng(0)


def numpy_machine(C, u, P, shift, form):
    """One state machine in float64: LegT memory of the window, C mix, shifted Legendre read-out."""
    L, O = u.shape[-2:]
    q = np.arange(P)
    n, k = np.meshgrid(q, q, indexing="ij")
    A = -np.sqrt(np.outer(2 * q + 1, 2 * q + 1)) * np.where(k <= n, 1.0, (-1.0) ** (n - k)) / L
    B = np.sqrt(2 * q + 1) / L
    inv = np.linalg.inv(np.eye(P) - A / 2)  # eq. 13 with Delta = 1
    Ad, Bd = inv @ (np.eye(P) + A / 2), inv @ B
    s = (np.arange(L) + 0.5 + shift) / L
    g = np.stack([np.sqrt(2 * i + 1) * eval_legendre(i, 2 * s - 1) for i in range(P)], 1)
    signal = u if form == "channels" else u.sum(-1, keepdims=True)  # eq. 3 sums the channels
    c = np.zeros(signal.shape[:-2] + (signal.shape[-1], P))
    for l in range(L):
        c = c @ Ad.T + signal[..., l, :, None] * Bd
    if form == "channels":
        x = np.einsum("oe,...ep->...op", C, c)
        return np.einsum("...op,lp->...lo", x, g)
    x = c[..., 0, :] @ C.T
    return x[..., None, :] * g  # eq. 5


@pytest.mark.parametrize("form", ["channels", "sum"])
def test_state_machine_matches_numpy(form):
    L, O = 12, 6
    machine = smm.StateMachine(state_size=O, shift=1 / 3, form=form, init_std=0.3)
    u = rng.standard_normal((2, L, O), np.float32)
    params = jax.jit(machine.init)(jax.random.key(0), u)
    got = jax.jit(machine.apply)(params, u)
    C = np.asarray(params["params"]["C"], np.float64)
    expected = numpy_machine(C, u.astype(np.float64), O, 1 / 3, form)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


TINY = smm.SMMConfig(width=16, channels=8, state_size=8, num_machines=3)


def test_smm_shapes_pairs_and_loss():
    B, S, Nq, H = 3, 4, 5, TINY.width
    questions = rng.standard_normal((B, S, H), np.float32)
    images = rng.standard_normal((B, Nq, H), np.float32)
    V = np.stack([[np.concatenate([questions[j], images[i]]) for j in range(B)]
                  for i in range(B)])                      # [i, j] = [question j ; image i]
    model = smm.SMM(TINY)
    params = jax.jit(model.init)(jax.random.key(0), V)
    kernels = [params["params"][name]["kernel"] for name in ("encoder", "decoder")]
    assert kernels[0].shape == (H, 8) and kernels[1].shape == (8, H)
    assert all(0.015 < float(np.std(k)) < 0.025 for k in kernels)  # N(0, 0.02)
    pred = jax.jit(model.apply)(params, V)
    assert pred.shape == (B, B, H)
    # the B^2 pairs from 2B + 1 sequences (the SMM is affine in its tokens), biases included
    params = jax.tree.map(lambda a: a + 0.1 * rng.standard_normal(a.shape, np.float32), params)
    pred = jax.jit(model.apply)(params, V)
    inputs = smm.pair_inputs(questions, images)
    assert inputs.shape == (2 * B + 1, S + Nq, H)
    np.testing.assert_allclose(smm.pair_outputs(jax.jit(model.apply)(params, inputs)), pred,
                               rtol=1e-4, atol=1e-5 * float(np.abs(pred).max()))

    yes, no = rng.standard_normal(H), rng.standard_normal(H)
    labels = np.eye(B)
    p = np.asarray(pred, np.float64)
    cos = lambda e: p @ e / (np.linalg.norm(p, axis=-1) * np.linalg.norm(e))
    s_yes, s_no = (1 + cos(yes)) / 2, (1 + cos(no)) / 2
    p_yes = s_yes / (s_yes + s_no)
    expected = -np.mean(labels * np.log(p_yes) + (1 - labels) * np.log(1 - p_yes))
    got = smm.yes_no_loss(pred, jnp.asarray(yes, jnp.float32), jnp.asarray(no, jnp.float32),
                          labels)
    assert float(got) == pytest.approx(expected, rel=1e-4)


def test_softmax_yes_no_and_the_balanced_loss_against_numpy():
    rng = np.random.default_rng(1)
    pred = rng.standard_normal((3, 4, 6))
    yes = rng.standard_normal(6)
    no = yes + 0.3 * rng.standard_normal(6)      # close to "yes", as words never trained on
    labels = np.eye(3, 4)
    cos = lambda e: pred @ e / (np.linalg.norm(pred, axis=-1) * np.linalg.norm(e))  # noqa: E731
    p_yes = 1 / (1 + np.exp(-(cos(yes) - cos(no)) / 0.07))
    args = [jnp.asarray(a, jnp.float32) for a in (pred, yes, no)]
    np.testing.assert_allclose(smm.yes_probability(*args, form="softmax"),
                               np.clip(p_yes, 1e-7, 1 - 1e-7), rtol=1e-4)
    balanced = -(np.log(p_yes)[labels == 1].mean() + np.log(1 - p_yes)[labels == 0].mean()) / 2
    got = smm.yes_no_loss(*args, labels, form="softmax", balanced=True)
    assert float(got) == pytest.approx(balanced, rel=1e-4)
    # the printed ratio cannot leave ~0.5 when the two embeddings are this close
    ratio = np.asarray(smm.yes_probability(*args, form="ratio"))
    assert np.abs(ratio - 0.5).max() < np.abs(p_yes - 0.5).max()
    with pytest.raises(ValueError, match="yes/no form 'max'"):
        smm.yes_probability(*args, form="max")


@pytest.mark.parametrize("form", ["channels", "sum"])
def test_smm_learns_toy_yes_no(form):
    """A hundred Adam steps take the yes/no loss well below the label entropy on toy pairs.

    The SMM is linear up to the cosine similarities, so the toy answer is linearly separable:
    "yes" iff both the question and the image are of class 1.
    """
    rng = np.random.default_rng(1)
    cfg = smm.SMMConfig(width=16, channels=8, state_size=8, num_machines=2, form=form)
    B, H = 6, cfg.width
    classes = np.array([0, 1, 0, 1, 1, 0])
    protos = rng.standard_normal((2, H), np.float32)
    questions = protos[classes, None, :] + 0.3 * rng.standard_normal((B, 3, H), np.float32)
    images = protos[classes, None, :] + 0.3 * rng.standard_normal((B, 4, H), np.float32)
    V = smm.pair_inputs(questions, images)  # pairs [i, j] = [question j ; image i]
    labels = jnp.asarray(np.outer(classes, classes), jnp.float32)
    p = float(labels.mean())
    entropy = -(p * np.log(p) + (1 - p) * np.log(1 - p))
    yes, no = jnp.asarray(rng.standard_normal((2, H)), jnp.float32)
    model = smm.SMM(cfg)
    params = jax.jit(model.init)(jax.random.key(1), V)
    opt = optax.adam(1e-2)

    @jax.jit
    def train(params):  # 100 Adam steps in one compiled loop
        def step(carry, _):
            params, state = carry
            loss, grads = jax.value_and_grad(
                lambda p: smm.yes_no_loss(smm.pair_outputs(model.apply(p, V)), yes, no,
                                         labels))(params)
            updates, state = opt.update(grads, state)
            return (optax.apply_updates(params, updates), state), loss

        (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), length=100)
        return losses

    loss = train(params)[-1]
    assert float(loss) < 0.7 * entropy, (float(loss), entropy)  # 0.7 * best constant guess


def test_optimizer_decays_learning_rate_per_epoch():
    opt = smm.optimizer(smm.SMMConfig(), steps_per_epoch=2)
    params = jnp.zeros(1)
    state = opt.init(params)
    steps = []
    for _ in range(4):  # Adam's update for a constant gradient is -lr exactly
        update, state = opt.update(jnp.ones(1), state)
        steps.append(-float(update[0]))
    np.testing.assert_allclose(steps, [5e-5, 5e-5, 5e-5 * 0.99, 5e-5 * 0.99], rtol=1e-4)


@pytest.mark.parametrize("sentence, question", [
    ("The man is pushing a stroller on the street.",
     "Is the man pushing a stroller on the street?"),
    ("Two people are walking on the sidewalk.", "Are two people walking on the sidewalk?"),
    ("John can ride a bike.", "Can John ride a bike?"),
    ("A car has stopped in the road", "Has a car stopped in the road?"),
    ("A dog runs.", "Is it true that a dog runs?"),
])
def test_to_question_moves_first_auxiliary(sentence, question):
    assert smm.to_question(sentence) == question


@pytest.mark.parametrize("measure", ["legs", "paper003", "lmu"])
def test_other_hippo_measures_give_finite_outputs(measure):
    machine = smm.StateMachine(state_size=4, shift=0.5, measure=measure, init_std=0.3)
    out, _ = jax.jit(machine.init_with_output)(jax.random.key(0), jnp.ones((1, 6, 4)))
    assert out.shape == (1, 6, 4) and bool(jnp.all(jnp.isfinite(out)))
    assert float(jnp.abs(out).max()) > 0
