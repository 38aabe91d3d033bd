"""HiPPO math checked against formulas typed from the papers, scipy, and float64 numpy loops."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
from scipy.special import eval_legendre

from tvad_jax.models import hippo

# Jitted once per shape: eager dispatch of many small ops is what makes tests slow on CPU.
all_states = jax.jit(hippo.linear_recurrence, static_argnames=("mode", "chunk", "layout"))
final_state = jax.jit(hippo.final_state)
discretize = jax.jit(hippo.discretize, static_argnames="method")
rng = np.random.default_rng(0)


def numpy_states(Ad, Bd, u):
    """Every state of c(l) = Ad c(l-1) + Bd u(l) by a plain float64 loop; u (..., L, D)."""
    Ad, Bd, u = (np.asarray(x, np.float64) for x in (Ad, Bd, u))
    c = np.zeros(u.shape[:-2] + (u.shape[-1], Bd.shape[0]))
    states = []
    for l in range(u.shape[-2]):
        c = c @ Ad.T + u[..., l, :, None] * Bd
        states.append(c)
    return np.stack(states, axis=-3)


def test_paper003_reproduces_eqs_10_11_entry_by_entry():
    N, L = 6, 7.0
    A, B = hippo.transition("paper003", N, L)
    for o in range(N):
        assert B[o] == pytest.approx(-((2 * o + 1) ** 0.5) / L, rel=1e-14)
        for h in range(N):
            if o > h:
                expected = -((2 * o + 1) ** 0.5) * (2 * h + 1) ** 0.5 / L
            elif o < h:
                expected = 0.0
            else:
                expected = -(o + 1) / L
            assert A[o, h] == pytest.approx(expected, rel=1e-14, abs=0)
    A_legs, B_legs = hippo.transition("legs", N, 1.0)
    np.testing.assert_allclose(A, A_legs / L, rtol=1e-14)
    np.testing.assert_allclose(B, -B_legs / L, rtol=1e-14)


def test_lmu_matches_voelker_and_is_legt_in_other_coordinates():
    N, theta = 5, 3.0
    A, B = hippo.transition("lmu", N, theta)
    for i in range(N):  # Voelker et al. 2019, eq. 2, typed element by element
        assert B[i] == pytest.approx((2 * i + 1) * (-1) ** i / theta)
        for j in range(N):
            sign = -1.0 if i < j else (-1.0) ** (i - j + 1)
            assert A[i, j] == pytest.approx((2 * i + 1) * sign / theta)
    # m = S c with S = diag((-1)^n sqrt(2n+1)) maps the LegT state to the LMU state.
    A_t, B_t = hippo.transition("legt", N, theta)
    S = np.diag((-1.0) ** np.arange(N) * np.sqrt(2 * np.arange(N) + 1))
    np.testing.assert_allclose(S @ A_t @ np.linalg.inv(S), A, atol=1e-12)
    np.testing.assert_allclose(S @ B_t, B, atol=1e-12)


def test_legt_is_s4_legt_with_window_2():
    N = 5
    A, B = hippo.transition("legt", N, 2.0)
    R = np.sqrt(2 * np.arange(N) + 1)
    for i in range(N):  # state-spaces' transition('legt'), typed element by element
        assert B[i] == pytest.approx(0.5 * R[i])
        for j in range(N):
            sign = (-1.0) ** (i - j) if i < j else 1
            assert A[i, j] == pytest.approx(-0.5 * R[i] * R[j] * sign)


def test_legs_matches_hippo_paper():
    N = 5
    A, B = hippo.transition("legs", N)
    for n in range(N):  # Gu et al. 2020, eq. (2) / Theorem 2
        assert B[n] == pytest.approx((2 * n + 1) ** 0.5)
        for k in range(N):
            expected = -((2 * n + 1) * (2 * k + 1)) ** 0.5 if n > k else (-(n + 1) if n == k else 0)
            assert A[n, k] == pytest.approx(expected)


def test_discretizations_match_closed_forms():
    A, B = hippo.transition("legt", 6, 4.0)
    dt = 0.7
    I = np.eye(6)
    with jax.enable_x64(True):
        bil, zoh, eul = ([np.asarray(x) for x in hippo.discretize(A, B, dt, method)]
                         for method in ("bilinear", "zoh", "forward_euler"))
    # Paper 003 eq. 13.
    inv = np.linalg.inv(I - dt / 2 * A)
    np.testing.assert_allclose(bil[0], inv @ (I + dt / 2 * A), atol=1e-12)
    np.testing.assert_allclose(bil[1], inv @ (dt * B), atol=1e-12)
    # Exact solution for input held constant over the step.
    expm = scipy.linalg.expm(dt * A)
    np.testing.assert_allclose(zoh[0], expm, atol=1e-10)
    np.testing.assert_allclose(zoh[1], np.linalg.solve(A, (expm - I) @ B), atol=1e-10)
    np.testing.assert_allclose(eul[0], I + dt * A, atol=1e-14)
    np.testing.assert_allclose(eul[1], dt * B, atol=1e-14)


def test_legendre_basis_matches_scipy():
    N, L, shift = 7, 11, 0.25
    s = (np.arange(L) + 0.5 + shift) / L
    legendre = np.stack([eval_legendre(n, 2 * s - 1) for n in range(N)], axis=1)
    np.testing.assert_allclose(
        hippo.legendre_basis(N, L, "legt", shift), legendre * np.sqrt(2 * np.arange(N) + 1),
        atol=1e-12)
    np.testing.assert_allclose(
        hippo.legendre_basis(N, L, "lmu", shift), legendre * (-1.0) ** np.arange(N), atol=1e-12)


def test_kernel_is_matrix_powers():
    A, B = hippo.transition("legs", 5, 3.0)
    Ad, Bd = discretize(A, B, 1.0)
    K = hippo.kernel(Ad, Bd, 13)
    Ad64, Bd64 = np.asarray(Ad, np.float64), np.asarray(Bd, np.float64)
    expected = np.stack([np.linalg.matrix_power(Ad64, k) @ Bd64 for k in range(13)])
    np.testing.assert_allclose(K, expected, rtol=1e-5, atol=1e-6)


def test_modes_final_state_and_streaming_agree_with_loop():
    A, B = hippo.transition("legt", 8, 16.0)
    Ad, Bd = discretize(A, B, 1.0)
    u = rng.standard_normal((2, 3, 33, 4), np.float32)  # two batch axes, L=33, D=4
    expected = numpy_states(Ad, Bd, u)
    scale = np.abs(expected).max()
    for mode in hippo.MODES:
        got = all_states(Ad, Bd, u, mode)
        assert got.shape == (2, 3, 33, 4, 8)
        np.testing.assert_allclose(got, expected, atol=2e-5 * scale, err_msg=mode)
        got = all_states(Ad, Bd, u, mode, layout="dlp")
        assert got.shape == (2, 3, 4, 33, 8)
        np.testing.assert_allclose(got, np.swapaxes(expected, -3, -2), atol=2e-5 * scale,
                                   err_msg=f"{mode}, dlp")
    np.testing.assert_allclose(final_state(Ad, Bd, u), expected[..., -1, :, :], atol=2e-5 * scale)
    step = jax.jit(hippo.step)
    state = jnp.zeros((2, 3, 4, 8))
    for l in range(5):
        state = step(Ad, Bd, state, u[..., l, :])
        np.testing.assert_allclose(state, expected[..., l, :, :], atol=2e-5 * scale)


def test_scalar_input_form_of_paper003_eq3():
    A, B = hippo.transition("paper003", 6, 10.0)
    Ad, Bd = discretize(A, B, 1.0)
    u = np.asarray(rng.standard_normal((3, 10, 5), np.float32), np.float64)
    c = np.zeros((3, 6))
    for l in range(10):  # eq. 3: c(l+1) = A c(l) + B sum_o u_o(l+1)
        c = c @ np.asarray(Ad, np.float64).T + np.outer(u[:, l].sum(-1), np.asarray(Bd))
    got = final_state(Ad, Bd, jnp.asarray(u.sum(-1, keepdims=True), jnp.float32))
    np.testing.assert_allclose(got[:, 0], c, rtol=1e-5, atol=1e-6)


def test_legt_memory_reconstructs_last_window():
    L = 256  # window of L samples; the signal runs for 3 windows
    t = np.arange(3 * L) / L
    f = np.sin(2 * np.pi * 1.3 * t) + 0.5 * np.cos(2 * np.pi * 0.4 * t + 1)
    errors = []
    for N in (4, 8, 16):
        for measure in ("legt", "lmu"):
            Ad, Bd = discretize(*hippo.transition(measure, N, L), 1.0)
            c = final_state(Ad, Bd, jnp.asarray(f, jnp.float32)[:, None])[0]
            window = np.asarray(hippo.reconstruct(c, L, measure))
            errors.append(np.abs(window - f[-L:]).max())
    legt, lmu = errors[0::2], errors[1::2]
    assert legt[0] > legt[1] > legt[2], legt
    assert legt[2] < 2e-3, legt
    np.testing.assert_allclose(lmu, legt, rtol=0.05, atol=2e-4)


def test_gradients_flow_through_all_modes():
    A, B = hippo.transition("legt", 4, 8.0)
    Ad, Bd = discretize(A, B, 1.0)
    u = rng.standard_normal((2, 9, 3), np.float32)
    W = rng.standard_normal((2, 9, 3, 4), np.float32)

    # Adjoint of the recurrence in float64: g(l) = W(l) + Ad^T g(l+1).
    Ad64, Bd64, u64, W64 = (np.asarray(x, np.float64) for x in (Ad, Bd, u, W))
    states = numpy_states(Ad64, Bd64, u64)
    g = np.zeros((2, 3, 4))
    du = np.zeros_like(u64)
    dAd = np.zeros((4, 4))
    for l in reversed(range(9)):
        g = W64[:, l] + g @ Ad64
        du[:, l] = g @ Bd64
        prev = states[:, l - 1] if l > 0 else np.zeros((2, 3, 4))
        dAd += np.einsum("bdp,bdq->pq", g, prev)

    for mode in hippo.MODES:
        for layout, weights in (("ldp", W), ("dlp", np.swapaxes(W, -3, -2))):
            loss = lambda Ad, u: jnp.sum(weights * hippo.linear_recurrence(
                Ad, Bd, u, mode, chunk=4, layout=layout))
            gAd, gu = jax.jit(jax.grad(loss, argnums=(0, 1)))(Ad, u)
            np.testing.assert_allclose(gu, du, rtol=1e-4, atol=1e-4, err_msg=(mode, layout))
            np.testing.assert_allclose(gAd, dAd, rtol=1e-4, atol=1e-3, err_msg=(mode, layout))

    loss = lambda Ad, u: jnp.sum(W[:, -1] * hippo.final_state(Ad, Bd, u))
    gAd, gu = jax.jit(jax.grad(loss, argnums=(0, 1)))(Ad, u)
    assert np.abs(gu).min() > 0 and np.abs(gAd).max() > 0


@pytest.mark.parametrize("measure", hippo.MEASURES)
@pytest.mark.parametrize("batch, L, chunk", [
    ((), 5, 16),  # no batch axis, L shorter than one chunk
    ((3,), 37, 8),  # L not a multiple of the chunk
    ((2, 2), 32, 8),  # two batch axes, whole chunks
    ((2,), 6, 1),  # one step per chunk
])
def test_chunked_equals_scan_in_value_and_gradient(measure, batch, L, chunk):
    Ad, Bd = discretize(*hippo.transition(measure, 8, 16.0), 1.0)
    u = rng.standard_normal(batch + (L, 3), np.float32)
    W = rng.standard_normal(batch + (L, 3, 8), np.float32)
    expected = all_states(Ad, Bd, u, "scan")
    got = all_states(Ad, Bd, u, "chunked", chunk)
    assert got.shape == expected.shape == batch + (L, 3, 8)
    np.testing.assert_allclose(got, expected, atol=2e-5 * np.abs(expected).max())

    def grad_u(mode):
        loss = lambda u: jnp.sum(W * hippo.linear_recurrence(Ad, Bd, u, mode, chunk))
        return jax.jit(jax.grad(loss))(u)

    expected = grad_u("scan")
    np.testing.assert_allclose(grad_u("chunked"), expected, atol=2e-5 * np.abs(expected).max())


@pytest.mark.parametrize("mode", hippo.MODES)
def test_modes_keep_the_shape_of_an_empty_sequence(mode):
    Ad, Bd = discretize(*hippo.transition("legt", 4, 8.0), 1.0)
    assert all_states(Ad, Bd, jnp.zeros((2, 0, 3)), mode).shape == (2, 0, 3, 4)
    assert all_states(Ad, Bd, jnp.zeros((2, 0, 3)), mode, layout="dlp").shape == (2, 3, 0, 4)


def test_unknown_layout_and_mode_are_refused():
    Ad, Bd = discretize(*hippo.transition("legt", 4, 8.0), 1.0)
    with pytest.raises(ValueError, match="unknown layout 'tdp'; known: \\('ldp', 'dlp'\\)"):
        hippo.linear_recurrence(Ad, Bd, jnp.zeros((6, 2)), layout="tdp")
    with pytest.raises(ValueError, match="unknown mode 'fft'"):
        hippo.linear_recurrence(Ad, Bd, jnp.zeros((6, 2)), "fft")


@pytest.mark.parametrize("chunk", [0, -4, 2.5, True])
def test_chunked_refuses_bad_chunk_size(chunk):
    Ad, Bd = discretize(*hippo.transition("legt", 4, 8.0), 1.0)
    with pytest.raises(ValueError, match="chunk must be a positive integer"):
        hippo.linear_recurrence(Ad, Bd, jnp.zeros((6, 2)), "chunked", chunk)
