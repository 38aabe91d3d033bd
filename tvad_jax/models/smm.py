"""Paper 003's State Machine Module (SMM): does the previous caption still hold for this frame?

The input sequence V = [question tokens from the previous caption ; image tokens of the current
frame] (L = S_t + N_q tokens of width H_d) is projected to O channels by the Feature Space
Encoder, run through N_SMM stacked state machines that each shift the sequence delta =
1/N_SMM samples ahead (eq. 5), and the last position is projected back to H_d by the Feature
Space Decoder. Its cosine similarities with the embeddings of "yes" and "no" give the answer
(eq. 6).

Each state machine keeps only what the paper uses: the state at the end of the window, from
`hippo.final_state` (one matmul, no scan), mixed by a learnable C (O x O), read out on the
Legendre basis shifted by delta.

Two forms of eq. 3, chosen by `SMMConfig.form`:
- `sum` (the paper's literal form): one state c in R^O driven by the sum of the O channels,
  u_o(l) = c_o g_o(l) summed over o (eqs. 2-3); C mixes the O Legendre coefficients.
- `channels` (default): every channel has its own P-coefficient Legendre memory (SISO, as in
  S4 and the LMU) and C mixes channels. The literal form reduces each token to one number
  (encoder then sum is a single H_d -> 1 projection), so the whole question-image sequence
  passes through a scalar signal; the per-channel form keeps O signals, which is how paper
  003 describes V ("H_d 1-dimensional signals") and what its O x O matrix C can act on.

The default measure is `legt`, whose state is exactly the window the paper reconstructs with
g_o; `paper003` (eqs. 10-11, a scaled-Legendre memory) is available for the literal setting.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from tvad_jax.models import hippo, layers


@dataclasses.dataclass(frozen=True)
class SMMConfig:
    """SMM sizes and training defaults from paper 003 §4 (Implementation Details)."""

    width: int = 768  # H_d, width of question and image tokens
    channels: int = 64  # O, Feature Space Encoder output
    state_size: int = 64  # P, Legendre coefficients per channel ('channels' form; 'sum' uses O)
    num_machines: int = 3  # N_SMM, each predicting 1/N_SMM ahead
    measure: str = "legt"  # hippo.transition measure
    method: str = "bilinear"  # hippo.discretize method (paper: bilinear, eqs. 12-14)
    form: str = "channels"  # 'channels' or 'sum' (eq. 3 literally)
    init_std: float = 0.02  # all weights ~ N(0, 0.02)
    learning_rate: float = 5e-5
    lr_decay: float = 0.99  # per epoch


class StateMachine(nn.Module):
    """One state machine: Legendre memory of the window, mixed by C, read out `shift` ahead."""

    state_size: int  # P
    shift: float  # delta, in samples
    form: str = "channels"
    measure: str = "legt"
    method: str = "bilinear"
    init_std: float = 0.02

    @nn.compact
    def __call__(self, u):  # u (..., L, O) -> the window shifted delta ahead (..., L, O)
        L, O = u.shape[-2:]
        Ad, Bd = hippo.discretize(*hippo.transition(self.measure, self.state_size, L), 1.0,
                                  self.method)
        basis_measure = "lmu" if self.measure == "lmu" else "legt"
        g = jnp.asarray(hippo.legendre_basis(self.state_size, L, basis_measure, self.shift),
                        u.dtype)  # (L, P) shifted basis g_o(l' - l + L + delta)
        C = self.param("C", nn.initializers.normal(self.init_std), (O, O))
        if self.form == "channels":
            c = hippo.final_state(Ad, Bd, u)  # (..., O, P)
            x = jnp.einsum("oe,...ep->...op", C, c)
            return jnp.einsum("...op,lp->...lo", x, g)
        if self.form == "sum":
            if self.state_size != O:
                raise ValueError("form 'sum' needs state_size == channels (eq. 2: u_o = c_o g_o)")
            c = hippo.final_state(Ad, Bd, u.sum(-1, keepdims=True))[..., 0, :]  # (..., O)
            x = jnp.einsum("oe,...e->...o", C, c)
            return x[..., None, :] * g  # eq. 5: u_o(l' + delta) = x_o g_o(l' - l + L + delta)
        raise ValueError(f"unknown SMM form {self.form!r}; known: 'channels', 'sum'")


class SMM(nn.Module):
    """Encoder (H_d -> O), N_SMM state machines, decoder of the last position (O -> H_d)."""

    config: SMMConfig = SMMConfig()

    @nn.compact
    def __call__(self, tokens):  # tokens (..., L, H_d) = [question ; image] -> (..., H_d)
        cfg = self.config
        init = nn.initializers.normal(cfg.init_std)
        u = layers.Dense(cfg.channels, kernel_init=init, name="encoder")(tokens)  # (..., L, O)
        state_size = cfg.channels if cfg.form == "sum" else cfg.state_size
        for i in range(cfg.num_machines):
            u = StateMachine(state_size, 1.0 / cfg.num_machines, cfg.form, cfg.measure,
                             cfg.method, cfg.init_std, name=f"machine_{i}")(u)
        return layers.Dense(cfg.width, kernel_init=init, name="decoder")(u[..., -1, :])


def pair_inputs(questions, images):
    """The 2B + 1 sequences whose SMM outputs give every (image i, question j) pair's
    (`pair_outputs`): (B, S, H), (B, N_q, H) -> (2B + 1, S + N_q, H), rows [question j ; 0],
    then [0 ; image i], then [0 ; 0]."""
    zq, zv = jnp.zeros_like(questions), jnp.zeros_like(images)
    return jnp.concatenate([jnp.concatenate([questions, zv], axis=-2),
                            jnp.concatenate([zq, images], axis=-2),
                            jnp.concatenate([zq[:1], zv[:1]], axis=-2)])


def pair_outputs(out):
    """SMM outputs of `pair_inputs` (2B + 1, H) -> (B, B, H), [i, j] the output for
    [question j ; image i], the input of eq. 6. Exact because the SMM is affine in its tokens
    (a Dense encoder, linear state machines, a Dense decoder): SMM([q ; v]) = SMM([q ; 0]) +
    SMM([0 ; v]) - SMM([0 ; 0]), so 2B + 1 sequences stand for the B^2 pairs."""
    B = (out.shape[0] - 1) // 2
    return out[B:2 * B, None] + out[None, :B] - out[2 * B]


YES_NO_FORMS = ("ratio", "softmax")


def yes_probability(pred, emb_yes, emb_no, form: str = "ratio", scale: float = 1 / 0.07):
    """p("yes") of eq. 6 from the SMM's output pred (..., H) -> (...).

    "ratio" (eq. 6 as printed): Sim(P, yes) / (Sim(P, yes) + Sim(P, no)). Cosine similarities
    lie in [-1, 1], so the printed ratio is not a probability (its log can be of a negative
    number); each is first mapped to [0, 1] by (1 + s) / 2.
    "softmax": the two-way softmax over scale x [cos(P, yes), cos(P, no)], i.e.
    sigmoid(scale (cos_yes - cos_no)). Where the two embeddings are close (a text tower that
    never saw the words; 0.9 cosine for ITAM's here) the ratio cannot pass ~0.51 whatever P
    is, and its gradient vanishes; the scaled softmax (CLIP's 1 / 0.07) can.
    """
    def cos(a, b):  # scale-free: the N(0, 0.02) initialization makes outputs tiny
        return jnp.sum(a * b, -1) / jnp.maximum(
            jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1), 1e-30)

    c_yes, c_no = cos(pred, emb_yes), cos(pred, emb_no)
    if form == "softmax":
        p = jax.nn.sigmoid(scale * (c_yes - c_no))
    elif form == "ratio":
        s_yes, s_no = (1 + c_yes) / 2, (1 + c_no) / 2
        p = s_yes / jnp.maximum(s_yes + s_no, 1e-30)
    else:
        raise ValueError(f"yes/no form {form!r}: expected one of {YES_NO_FORMS}")
    return jnp.clip(p, 1e-7, 1 - 1e-7)


def yes_no_loss(pred, emb_yes, emb_no, labels, form: str = "ratio", balanced: bool = False):
    """Binary cross-entropy of eq. 6 over all pairs; labels (...) are 1 for "yes".

    Eq. 6 prints only the y log p(yes) term, which would never train a "no"; the (1 - y)
    log p(no) term of the cross-entropy it names is added. `balanced`: the mean over the
    "yes" pairs and the mean over the "no" pairs weigh equally (a batch of B_s crops holds
    B_s^2 pairs of which about B_s are "yes": unbalanced, an SMM that always says "no" is
    right 1 - 1/B_s of the time).
    """
    p = yes_probability(pred, emb_yes, emb_no, form)
    yes, no = labels * jnp.log(p), (1 - labels) * jnp.log1p(-p)
    if balanced:
        return -(yes.sum() / jnp.maximum(labels.sum(), 1) +
                 no.sum() / jnp.maximum((1 - labels).sum(), 1)) / 2
    return -jnp.mean(yes + no)


def optimizer(config: SMMConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """Adam at the paper's learning rate, multiplied by `lr_decay` after every epoch.

    The paper gives the rate and decay but not the optimizer; Adam is what it uses for RM.
    """
    schedule = optax.exponential_decay(config.learning_rate, steps_per_epoch, config.lr_decay,
                                       staircase=True)
    return optax.adam(schedule)


_AUXILIARIES = frozenset(
    "am is are was were has have had do does did can could will would shall should may might "
    "must".split())
_LOWERCASE_FIRST = frozenset(
    "the a an this that these those there it he she they we you his her its their my our "
    "your some one two three four five many several".split())


def to_question(sentence: str) -> str:
    """Declarative caption -> yes/no question (paper 003, Appendix G, Algorithm 2).

    The first auxiliary verb moves to the front: "The man is pushing a stroller." ->
    "Is the man pushing a stroller?". Algorithm 2 moves the first verb found by NLTK's
    tagger; without a tagger we look for auxiliaries, and a caption with none ("A dog runs.")
    becomes "Is it true that a dog runs?" rather than an ungrammatical inversion.
    """
    words = sentence.strip().rstrip(".!?").split()
    if not words:
        raise ValueError("empty sentence")
    first = words[0].lower() if words[0].lower() in _LOWERCASE_FIRST else words[0]
    for i, word in enumerate(words):
        if word.lower() in _AUXILIARIES:
            if i == 0:
                return " ".join(words) + "?"
            return " ".join([word.capitalize(), first] + words[1:i] + words[i + 1:]) + "?"
    return " ".join(["Is it true that", first] + words[1:]) + "?"
