"""HiPPO-Legendre state-space math: transition matrices, discretization, recurrences.

A HiPPO state c(t) in R^P holds the coefficients of the recent input history on a basis of
Legendre polynomials; it evolves as dc/dt = A c + B u. This module gives the matrices, their
discretization to c(l) = Ad c(l-1) + Bd u(l), and several ways of running that recurrence:

- `linear_recurrence(..., mode, layout)` returns every state: `scan` (sequential, the
  default), `associative` (parallel prefix over (A, b) pairs), `conv` (FFT convolution with the
  unrolled kernel), `chunked` (chunks of `chunk` steps, each chunk's states one GEMM of its
  inputs and its start state with `chunk_weights`, the start states by the final-state kernel)
  or `toeplitz` (one chunk as long as the sequence in the `dlp` layout; in `ldp`, one GEMM of
  the inputs' Toeplitz matrix gathered in the output's order, L / P times as large as the
  states). `layout` orders the states' axes as the caller wants them: `ldp` (..., L, D, P),
  time before channels, or `dlp` (..., D, L, P), each channel's states together; the chunked
  forms are born `dlp` and `scan` writes either in place.
- `final_state` returns only the last state: one matmul with the kernel, no scan.
- `step` advances one input at a time, for streaming.

Inputs have shape (..., L, D): D channels, each with its own P-dimensional state (single
input, single output, as in S4 and the LMU), so states have shape (..., L, D, P). Paper 003's
eq. 3 instead drives one state by the sum of its O channels; that is the same recurrence on
`u.sum(-1, keepdims=True)`.

Time-scale convention: `transition(measure, N, L)` measures time in steps of the input, so
with dt = 1 the LegT/LMU state covers the last L samples and LegS decays on a scale of L.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

MEASURES = ("legt", "lmu", "legs", "paper003")
METHODS = ("bilinear", "zoh", "forward_euler")
MODES = ("scan", "associative", "conv", "chunked", "toeplitz")
LAYOUTS = ("ldp", "dlp")  # (..., L, D, P) or (..., D, L, P)
CHUNK = 64  # steps per chunk of `chunked`: the SMM shape in one GEMM, 16 and 32 no faster
# at L = 1024 (forty-fourth session, `dlp`)


def transition(measure: str, N: int, L: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Continuous-time (A (N, N), B (N,)) of a HiPPO measure, in float64, for time scale L.

    - `legt`: translated Legendre (Gu et al. 2020) on the sliding window [t - L, t], with the
      orthonormal basis sqrt(2n+1) P_n(2s - 1), s in [0, 1] from the oldest to the newest end
      (`legendre_basis`). S4's `legt` is this with L = 2.
    - `lmu`: Voelker's Legendre Memory Unit, the same memory as `legt` in the coordinates
      m_n = (-1)^n sqrt(2n+1) c_n (basis (-1)^n P_n(2s - 1)).
    - `legs`: scaled Legendre in its time-invariant form (as in S4), divided by L.
    - `paper003`: paper 003's eqs. 10-11 as printed, A(o, h) = -sqrt(2o+1) sqrt(2h+1) / L
      below the diagonal, -(o+1) / L on it, 0 above, and B(o) = -sqrt(2o+1) / L, with o, h
      the Legendre degrees 0..N-1 (the printed range [1, O] would drop P_0 and break the
      formula's derivation). It equals `legs` / L with B's sign flipped; the authors'
      released code used S4's LegS instead.
    """
    q = np.arange(N, dtype=np.float64)
    r = np.sqrt(2 * q + 1)
    n, k = np.meshgrid(q, q, indexing="ij")
    if measure == "legt":
        A = -np.outer(r, r) * np.where(k <= n, 1.0, (-1.0) ** (n - k))
        B = r
    elif measure == "lmu":
        A = (2 * q + 1)[:, None] * np.where(n < k, -1.0, (-1.0) ** (n - k + 1))
        B = (2 * q + 1) * (-1.0) ** q
    elif measure in ("legs", "paper003"):
        A = -np.where(n > k, np.outer(r, r), 0.0) - np.diag(q + 1)
        B = r if measure == "legs" else -r
    else:
        raise ValueError(f"unknown measure {measure!r}; known: {MEASURES}")
    return A / L, B / L


def discretize(A, B, dt, method: str = "bilinear") -> tuple[jax.Array, jax.Array]:
    """Discrete (Ad (P, P), Bd (P,)) for step dt; differentiable in A, B and dt.

    `bilinear` is paper 003's eqs. 12-14 (trapezoid rule):
    Ad = (I - dt/2 A)^-1 (I + dt/2 A), Bd = (I - dt/2 A)^-1 dt B. `zoh` holds the input
    constant over the step (exact for piecewise-constant input): Ad = exp(dt A),
    Bd = A^-1 (exp(dt A) - I) B, computed by one block matrix exponential so that singular A
    works. `forward_euler`: Ad = I + dt A, Bd = dt B.
    """
    A, B = jnp.asarray(A), jnp.asarray(B)
    P = A.shape[0]
    eye = jnp.eye(P, dtype=A.dtype)
    if method == "bilinear":
        lhs = eye - dt / 2 * A
        Ad = jnp.linalg.solve(lhs, eye + dt / 2 * A)
        Bd = jnp.linalg.solve(lhs, dt * B)
    elif method == "zoh":
        block = jnp.zeros((P + 1, P + 1), A.dtype).at[:P, :P].set(A).at[:P, P].set(B)
        expm = jax.scipy.linalg.expm(dt * block)
        Ad, Bd = expm[:P, :P], expm[:P, P]
    elif method == "forward_euler":
        Ad, Bd = eye + dt * A, dt * B
    else:
        raise ValueError(f"unknown method {method!r}; known: {METHODS}")
    return Ad, Bd


def legendre_basis(N: int, L: int, measure: str = "legt", shift: float = 0.0) -> np.ndarray:
    """(L, N) basis values on a window of L samples, oldest first, so window ~ basis @ c.

    Sample j sits at s = (j + 1/2 + shift) / L, where s = 0 and 1 are the oldest and newest
    ends of the window: with dt = 1 the bilinear rule puts each sample at the centre of its
    cell. `shift` (in samples) moves the evaluation points forward in time (paper 003's eq. 5
    shifted basis g_o(l' - l + L + delta)).
    `measure` picks the normalization of `transition`: `legt` or `lmu`.
    """
    x = 2 * (np.arange(L, dtype=np.float64) + 0.5 + shift) / L - 1
    P = np.zeros((L, N))
    P[:, 0] = 1.0
    if N > 1:
        P[:, 1] = x
    for n in range(1, N - 1):  # Bonnet: (n+1) P_{n+1} = (2n+1) x P_n - n P_{n-1}
        P[:, n + 1] = ((2 * n + 1) * x * P[:, n] - n * P[:, n - 1]) / (n + 1)
    q = np.arange(N)
    if measure == "legt":
        return P * np.sqrt(2 * q + 1)
    if measure == "lmu":
        return P * (-1.0) ** q
    raise ValueError(f"legendre_basis is defined for 'legt' and 'lmu', not {measure!r}")


def reconstruct(c, L: int, measure: str = "legt", shift: float = 0.0) -> jax.Array:
    """The last window (..., L) of a signal from its Legendre state c (..., P)."""
    basis = jnp.asarray(legendre_basis(c.shape[-1], L, measure, shift), c.dtype)
    return jnp.einsum("...p,lp->...l", c, basis)


def kernel(Ad, Bd, L: int) -> jax.Array:
    """(L, P) unrolled kernel K[k] = Ad^k Bd, by log2(L) doublings (no sequential scan)."""
    K = Bd[None]  # (1, P)
    power = Ad  # Ad^(rows of K)
    while K.shape[0] < L:
        K = jnp.concatenate([K, K @ power.T])
        power = power @ power
    return K[:L]


def final_state(Ad, Bd, u) -> jax.Array:
    """Last state (..., D, P) of c(l) = Ad c(l-1) + Bd u(l) from c(0) = 0, for u (..., L, D).

    c(L) = sum_k Ad^(L-1-k) Bd u(k): one matmul of the inputs with the reversed kernel, so no
    intermediate state is ever materialized.
    """
    K = kernel(Ad, Bd, u.shape[-2])[::-1]  # (L, P), row k = Ad^(L-1-k) Bd
    return jnp.einsum("...ld,lp->...dp", u, K)


def step(Ad, Bd, state, u_t) -> jax.Array:
    """One streaming update: state (..., D, P), input u_t (..., D) -> next state."""
    return jnp.einsum("...dq,pq->...dp", state, Ad) + u_t[..., None] * Bd


def causal_conv(u, K) -> jax.Array:
    """Causal convolution y[l] = sum_{k <= l} K[k] * u[l - k] by FFT.

    K (L, D) against u (..., L, D) convolves each channel with its own kernel; in general K's
    axis 0 is time and its other axes broadcast against u's trailing axes, e.g. K (L, 1, P)
    against u (..., L, D, 1) gives every state (..., L, D, P).
    """
    axis = -K.ndim  # u's time axis, aligned with K's axis 0
    L = u.shape[axis]
    n = 1 << (2 * L - 1).bit_length()  # FFT size >= 2L - 1: no circular wrap-around
    uf = jnp.fft.rfft(u, n=n, axis=axis)
    kf = jnp.fft.rfft(K, n=n, axis=0)
    y = jnp.fft.irfft(uf * kf, n=n, axis=axis)
    return jax.lax.slice_in_dim(y, 0, L, axis=y.ndim + axis)


def linear_recurrence(Ad, Bd, u, mode: str = "scan", chunk: int = CHUNK,
                      layout: str = "ldp") -> jax.Array:
    """All states of c(l) = Ad c(l-1) + Bd u(l), c(0) = 0, for u (..., L, D).

    The states are (..., L, D, P) with `layout="ldp"` and (..., D, L, P) with `"dlp"`. `chunk`
    is the number of steps per chunk of the `chunked` mode (at most L); other modes ignore it.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known: {LAYOUTS}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; known: {MODES}")
    if mode == "scan":
        return _scan(Ad, Bd, u, time_axis=-3 if layout == "ldp" else -2)
    if mode == "toeplitz" and layout == "ldp":
        return _toeplitz(Ad, Bd, u)
    if mode in ("chunked", "toeplitz"):
        dlp = _chunked(Ad, Bd, u, chunk if mode == "chunked" else u.shape[-2] or 1)
        return dlp if layout == "dlp" else jnp.swapaxes(dlp, -3, -2)
    if mode == "associative":
        ldp = _associative(Ad, Bd, u)
    else:  # conv
        K = kernel(Ad, Bd, u.shape[-2])  # (L, P)
        ldp = causal_conv(u[..., None], K[:, None, :])
    return ldp if layout == "ldp" else jnp.swapaxes(ldp, -3, -2)


def _scan(Ad, Bd, u, time_axis):
    # The states are written in place into the output, time on `time_axis` (-3: (..., L, D, P),
    # -2: (..., D, L, P)), and each step reads the state before it back from there: no second
    # (..., D, P) carry, and no final transpose of a time-major stack (which had cost ~30% of
    # the mode).
    *batch, L, D = u.shape
    xs = jnp.moveaxis(u, -2, 0)  # (L, ..., D)
    shape = (*batch, L, D) if time_axis == -3 else (*batch, D, L)
    states = jnp.zeros(shape + Bd.shape, jnp.result_type(u, Bd))
    if L == 0:
        return states
    states = jax.lax.dynamic_update_index_in_dim(states, xs[0][..., None] * Bd, 0, time_axis)

    def body(states, t):
        before = jax.lax.dynamic_index_in_dim(states, t - 1, time_axis, keepdims=False)
        now = step(Ad, Bd, before, xs[t])
        return jax.lax.dynamic_update_index_in_dim(states, now, t, time_axis), None

    states, _ = jax.lax.scan(body, states, jnp.arange(1, L))
    return states


def _associative(Ad, Bd, u):
    # Element l is the affine map c -> A_l c + b_l; composing two maps gives
    # (A2, b2) o (A1, b1) = (A2 A1, A2 b1 + b2), an associative operation.
    b = jnp.moveaxis(u, -2, 0)[..., None] * Bd  # (L, ..., D, P)
    A = jnp.broadcast_to(Ad, (b.shape[0],) + Ad.shape)  # (L, P, P)

    def combine(first, second):
        A1, b1 = first
        A2, b2 = second
        return A2 @ A1, jnp.einsum("lpq,l...q->l...p", A2, b1) + b2

    _, states = jax.lax.associative_scan(combine, (A, b))
    return jnp.moveaxis(states, 0, -3)


def chunk_weights(Ad, Bd, C: int) -> jax.Array:
    """(C + P, C, P) weights of one chunk of C states from its inputs and its start state.

    State j of a chunk is sum_{i <= j} Ad^(j-i) Bd u(i) + Ad^(j+1) c, with c the state before
    the chunk: rows i < C hold Ad^(j-i) Bd (zero for i > j, a Toeplitz kernel) and rows C + q
    hold column q of Ad^(j+1), so that [u^T, c] (D, C + P) times the weights is every state.
    """
    powers = jnp.eye(Ad.shape[0], dtype=Ad.dtype)[None]  # (k, P, P), row k = Ad^k
    square = Ad  # Ad^(rows of powers)
    while powers.shape[0] <= C:  # log2(C) doublings
        powers = jnp.concatenate([powers, powers @ square])
        square = square @ square
    K = powers[:C] @ Bd  # (C, P), row k = Ad^k Bd
    i, j = np.arange(C)[:, None], np.arange(C)
    local = jnp.where((i <= j)[..., None], K[np.maximum(j - i, 0)], 0)  # (C i, C j, P)
    carry = jnp.transpose(powers[1:C + 1], (2, 0, 1))  # (P q, C j, P p) = Ad^(j+1)[p, q]
    return jnp.concatenate([local, carry])


def _chunked(Ad, Bd, u, C):
    # States (..., D, L, P). Each sequence is cut into n chunks of C steps (the last one
    # zero-padded, its states cut off; a sequence shorter than C is one chunk of its length).
    # First the state before each chunk: a scan over the n chunks only, whose step is the
    # chunk's last state from its inputs and its start state (the weights' last column, the
    # final-state kernel and Ad^C). Then every state of every chunk at once: [inputs, start
    # state] (..., D, n, C + P) times `chunk_weights` (C + P, C P), one GEMM whose output is
    # already the (..., D, L, P) layout. A single chunk starts from 0: the Toeplitz product
    # alone, C P per step where the start state's rows would add P P.
    if isinstance(C, bool) or not isinstance(C, (int, np.integer)) or C < 1:
        raise ValueError(f"chunk must be a positive integer, got {C!r}")
    *batch, L, D = u.shape
    P = Bd.shape[0]
    C = min(C, max(L, 1))
    n = -(-L // C)  # chunks per sequence
    if n * C != L:
        u = jnp.pad(u, [(0, 0)] * len(batch) + [(0, n * C - L), (0, 0)])
    chunks = jnp.swapaxes(u, -1, -2).reshape(*batch, D, n, C)  # (..., D, n, C)
    W = chunk_weights(Ad, Bd, C)  # (C + P, C, P)
    if n > 1:
        last = W[:, -1]  # (C + P, P): a chunk's last state from [inputs, start state]
        ends = jnp.einsum("...dnc,cp->n...dp", chunks[..., :-1, :], last[:C])  # from 0

        def body(start, end):  # start (..., D, P): the state before this chunk
            after = jnp.einsum("...q,qp->...p", start, last[C:]) + end
            return after, after

        _, starts = jax.lax.scan(body, jnp.zeros_like(ends[0]), ends)  # (n-1, ..., D, P)
        starts = jnp.moveaxis(jnp.concatenate([jnp.zeros_like(ends[:1]), starts]), 0, -2)
        chunks = jnp.concatenate([chunks, starts], axis=-1)  # (..., D, n, C + P)
    else:
        W = W[:C]
    states = jnp.einsum("...nc,cq->...nq", chunks, W.reshape(W.shape[0], C * P))
    return states.reshape(*batch, D, n * C, P)[..., :L, :]


def _toeplitz(Ad, Bd, u):
    # State l is sum_{m <= l} K[m] u(l - m): the inputs' Toeplitz matrix T[..., l, m, d] =
    # u(l - m) (0 for m > l) contracted with the kernel K (L, P) over m. T keeps (l, d) in the
    # output's order, so the GEMM writes (..., L, D, P) directly; it holds L x L x D values
    # per sequence, as many as the states when L = P.
    *batch, L, D = u.shape
    K = kernel(Ad, Bd, L)  # (L m, P)
    padded = jnp.pad(u, [(0, 0)] * len(batch) + [(L, 0), (0, 0)])  # u(l - m) at l - m + L
    index = np.arange(L)[:, None] - np.arange(L) + L  # (L l, L m)
    T = padded[..., index, :]  # (..., L l, L m, D)
    return jnp.einsum("...lmd,mp->...ldp", T, K)
