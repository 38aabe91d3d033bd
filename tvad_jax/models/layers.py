"""Pieces shared by the towers: projections with logical axes, norms, MLPs, RoPE, the CLIP block.

Shapes: B batch, L length (tokens attended together), D width, H query heads, K key/value
heads, Dh head size, F MLP hidden size. Params are float32 (`param_dtype`); `dtype` is the
compute dtype. Every param carries logical axis names (see `tvad_jax.train.mesh`).
"""
from __future__ import annotations

import functools
import itertools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from tvad_jax.models.attention import attention

Dtype = Any


def _init(init: Callable, axes: tuple[str | None, ...]) -> Callable:
    return nn.with_logical_partitioning(init, axes)


def kernel_init(axes: tuple[str | None, ...], stddev: float | None = None) -> Callable:
    """Lecun-normal (or normal(stddev)) initializer annotated with logical `axes`."""
    base = nn.initializers.lecun_normal() if stddev is None else nn.initializers.normal(stddev)
    return _init(base, axes)


def zeros(axes):
    return _init(nn.initializers.zeros_init(), axes)


def ones(axes):
    return _init(nn.initializers.ones_init(), axes)


def quick_gelu(x):
    return x * jax.nn.sigmoid(1.702 * x)


ACTIVATION_FNS: dict[str, Callable] = {
    "quick_gelu": quick_gelu,
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "silu": jax.nn.silu,
}


# How `linear` differentiates its kernel (process-wide, `set_weight_grad`):
#   "direct": the weight gradient contracts the input with the output gradient, x^T g, so the
#     only operand transposed for the GEMM is the input, a stored residual, kept as a matrix
#     [rows, in] (the batch axes merged) so that XLA writes its transpose as one 2-D transpose
#     instead of a loop over the batch axes (T-VAD's stage-1 step 67-71 -> 46-48 ms, the shipped
#     decoder's gradient 237 -> 222 ms on an Intel Xeon). On this project's 2-core CPU the
#     three-layer SwiGLU stack's gradient runs in 0.67x the time of "autodiff"
#     (benchmarks/bench_peer.py measures whole models).
#   "autodiff": JAX's transpose rule (g^T x): XLA fuses the elementwise producer of g (an
#     activation's derivative) into g's transpose, a strided write that cost the decoder's
#     backward more than its GEMMs. Same values up to float rounding of the sums; kept to
#     reproduce results trained before "direct" to every bit.
WEIGHT_GRADS = ("direct", "autodiff")
_weight_grad = "direct"


def set_weight_grad(method: str) -> None:
    """How every `linear` differentiates its kernel from now on (see WEIGHT_GRADS)."""
    global _weight_grad
    if method not in WEIGHT_GRADS:
        raise ValueError(f"weight_grad {method!r}: expected one of {', '.join(WEIGHT_GRADS)}")
    _weight_grad = method


def linear(x: jax.Array, kernel: jax.Array, in_dims: int = 1) -> jax.Array:
    """x [..., *in] contracted with kernel [*in, *out] (both of one dtype) over the `in_dims`
    axes -> [..., *out] (`jnp.tensordot`), differentiated as `set_weight_grad` says."""
    if x.dtype != kernel.dtype:
        raise TypeError(f"linear: x is {x.dtype}, the kernel {kernel.dtype}; cast both to the "
                        "compute dtype")
    if _weight_grad == "autodiff":
        return jnp.tensordot(x, kernel, axes=in_dims)
    batch, out = x.shape[:x.ndim - in_dims], kernel.shape[in_dims:]
    y = _linear_direct(x.reshape(-1, math.prod(kernel.shape[:in_dims])),
                       kernel.reshape(-1, math.prod(out)))
    return y.reshape(*batch, *out)


@jax.custom_vjp
def _linear_direct(x, kernel):            # [rows, in] @ [in, out], as matrices
    return x @ kernel


def _linear_forward(x, kernel):
    """Keeps x only when the kernel is differentiated and the kernel only when x is: a frozen
    layer (LoRA's base, a frozen tower) never computes the kernel gradient it would discard."""
    y = x.value @ kernel.value
    return y, (x.value if kernel.perturbed else None, kernel.value if x.perturbed else None)


def _linear_backward(residuals, g):
    x, kernel = residuals
    if isinstance(g, SymbolicZero):
        return None, None
    dx = None if kernel is None else g @ kernel.T
    dkernel = None if x is None else x.T @ g            # x^T g over the rows
    return dx, dkernel


_linear_direct.defvjp(_linear_forward, _linear_backward, symbolic_zeros=True)


def constrain(x: jax.Array, axes: tuple[str | None, ...]) -> jax.Array:
    """Logical sharding constraint on an activation (a no-op outside a mesh context)."""
    return nn.with_logical_constraint(x, axes)


def layer_norm(eps: float, dtype: Dtype, name: str | None = None) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, dtype=dtype, param_dtype=jnp.float32,
                        scale_init=ones(("embed",)), bias_init=zeros(("embed",)), name=name)


class RMSNorm(nn.Module):
    """x / rms(x) * scale, statistics in float32 (Llama's RMSNorm). Param: scale [D]."""

    eps: float = 1e-6
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        scale = self.param("scale", ones(("embed",)), (x.shape[-1],), jnp.float32)
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (jnp.asarray(scale, self.dtype) * x32.astype(self.dtype)).astype(self.dtype)


class Dense(nn.Module):
    """`nn.Dense` (the same params, initializers and forward values) computed by `linear`.
    Params: kernel [D_in, features], bias [features] when `use_bias`."""

    features: int
    use_bias: bool = True
    dtype: Dtype = jnp.float32
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features),
                            jnp.float32)
        y = linear(x.astype(self.dtype), kernel.astype(self.dtype))
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
            y = y + bias.astype(self.dtype)
        return y


class DepthwiseConv(nn.Module):
    """A depthwise convolution over the axes between batch and channels, "SAME" zero padding,
    computed as a weighted sum of shifted copies of x (XLA's grouped convolution and its
    gradient run ~25x slower on CPU at the AHD's shapes). x [B, *S, F] -> [B, *S, F].
    Params: kernel [*kernel_size, F] (variance scaling over the window), bias [F]."""

    kernel_size: tuple[int, ...]
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        if any(k % 2 == 0 for k in self.kernel_size) or x.ndim != len(self.kernel_size) + 2:
            raise ValueError(f"odd kernel_size over x's middle axes, got {self.kernel_size} "
                             f"for x {x.shape}")
        width = x.shape[-1]
        init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal",
                                                in_axis=tuple(range(len(self.kernel_size))),
                                                out_axis=-1)
        kernel = self.param("kernel", _init(init, (None,) * len(self.kernel_size) + ("mlp",)),
                            (*self.kernel_size, width), jnp.float32).astype(self.dtype)
        bias = self.param("bias", zeros(("mlp",)), (width,), jnp.float32)
        x = x.astype(self.dtype)
        halves = [k // 2 for k in self.kernel_size]
        padded = jnp.pad(x, [(0, 0)] + [(h, h) for h in halves] + [(0, 0)])
        out = jnp.zeros_like(x)
        for offset in itertools.product(*(range(k) for k in self.kernel_size)):
            window = tuple(slice(o, o + n) for o, n in zip(offset, x.shape[1:-1]))
            out = out + padded[(slice(None), *window)] * kernel[offset]
        return out + bias.astype(self.dtype)


class Projection(nn.Module):
    """A linear map contracting the last `in_dims` axes of x into `features` axes.

    Params: kernel [*in, *features] with logical `axes` (one name per kernel axis), bias
    [*features] when `use_bias`. (Like `nn.DenseGeneral`, whose flattened kernel
    initialisation cannot carry multi-axis logical names under a mesh.) Lecun-normal init with
    the fan-in of all contracted axes.
    """

    features: tuple[int, ...]
    axes: tuple[str | None, ...]
    in_dims: int = 1
    use_bias: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        n_in, n_out = self.in_dims, len(self.features)
        init = nn.initializers.variance_scaling(
            1.0, "fan_in", "truncated_normal", in_axis=tuple(range(n_in)),
            out_axis=tuple(range(n_in, n_in + n_out)))
        kernel = self.param("kernel", _init(init, self.axes),
                            tuple(x.shape[-n_in:]) + tuple(self.features), jnp.float32)
        y = linear(x.astype(self.dtype), kernel.astype(self.dtype), n_in)
        if self.use_bias:
            bias = self.param("bias", zeros(self.axes[n_in:]), tuple(self.features),
                              jnp.float32)
            y = y + bias.astype(self.dtype)
        return y


class Attention(nn.Module):
    """Q/K/V and output projections of multi-head (grouped-query) attention.

    Params: query/kernel [D, H, Dh], key|value/kernel [D, K, Dh] (+ biases [H|K, Dh] when
    `use_bias`), out/kernel [H, Dh, D] (+ bias [D]). The attention itself is
    `models.attention.attention`, called by the owner with its own masks or cache.
    """

    heads: int
    kv_heads: int
    head_dim: int
    width: int
    use_bias: bool = True
    dtype: Dtype = jnp.float32

    def setup(self):
        def proj(heads, name):
            return Projection((heads, self.head_dim), ("embed", "heads", "kv"),
                              use_bias=self.use_bias, dtype=self.dtype, name=name)

        self.query = proj(self.heads, "query")
        self.key = proj(self.kv_heads, "key")
        self.value = proj(self.kv_heads, "value")
        self.out = Projection((self.width,), ("heads", "kv", "embed"), in_dims=2,
                              use_bias=self.use_bias, dtype=self.dtype, name="out")

    def qkv(self, x):
        """x [B, L, D] -> q [B, L, H, Dh], k [B, L, K, Dh], v [B, L, K, Dh]."""
        q = constrain(self.query(x), ("batch", "length", "heads", "kv"))
        k = constrain(self.key(x), ("batch", "length", "heads", "kv"))
        v = constrain(self.value(x), ("batch", "length", "heads", "kv"))
        return q, k, v

    def output(self, o):
        """o [B, L, H, Dh] -> [B, L, D]."""
        return self.out(o)

    def __call__(self, x, mask=None, is_causal: bool = False):
        """Self-attention of x [B, L, D]; mask [B, 1|H, L, L] bool (True = attend)."""
        q, k, v = self.qkv(x)
        o = attention(q, k, v, mask, is_causal=is_causal)
        return self.output(o)


class MLP(nn.Module):
    """fc1 [D, F] -> activation -> fc2 [F, D] (CLIP's MLP, the LLaVA projector's shape)."""

    hidden: int
    out: int
    activation: str = "quick_gelu"
    dtype: Dtype = jnp.float32
    in_axis: str = "embed"
    out_axis: str = "embed"

    @nn.compact
    def __call__(self, x):
        h = Dense(self.hidden, dtype=self.dtype, kernel_init=kernel_init((self.in_axis, "mlp")),
                  bias_init=zeros(("mlp",)), name="fc1")(x)
        h = ACTIVATION_FNS[self.activation](h)
        h = constrain(h, ("batch", "length", "mlp"))
        return Dense(self.out, dtype=self.dtype, kernel_init=kernel_init(("mlp", self.out_axis)),
                     bias_init=zeros((self.out_axis,)), name="fc2")(h)


@jax.custom_vjp
def swiglu(gate: jax.Array, up: jax.Array) -> jax.Array:
    """silu(gate) * up, differentiated from gate and up alone: autodiff would keep sigmoid(gate)
    and silu(gate) as well, two more [B, L, F] tensors per layer held for the backward pass."""
    return jax.nn.silu(gate) * up


def _swiglu_forward(gate, up):
    return swiglu(gate, up), (gate, up)


def _swiglu_backward(residuals, g):
    gate, up = residuals
    sigmoid = jax.nn.sigmoid(gate)
    dgate = g * up * sigmoid * (1 + gate * (1 - sigmoid))     # d silu = s + x s (1 - s)
    return dgate, g * gate * sigmoid


swiglu.defvjp(_swiglu_forward, _swiglu_backward)


class GatedMLP(nn.Module):
    """Llama's SwiGLU MLP: down(silu(gate(x)) * up(x)); kernels gate|up [D, F], down [F, D]."""

    hidden: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        dense = functools.partial(Dense, use_bias=False, dtype=self.dtype)
        gate = dense(self.hidden, kernel_init=kernel_init(("embed", "mlp")), name="gate")(x)
        up = dense(self.hidden, kernel_init=kernel_init(("embed", "mlp")), name="up")(x)
        h = constrain(swiglu(gate, up), ("batch", "length", "mlp"))
        return dense(x.shape[-1], kernel_init=kernel_init(("mlp", "embed")), name="down")(h)


def rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotary position embedding in Llama's (Hugging Face) half-split layout.

    x [B, L, H, Dh], positions [B, L] int -> [B, L, H, Dh]: channel i < Dh/2 pairs with
    i + Dh/2, rotated by angle position * theta^(-2i/Dh). Computed in float32.
    """
    dim = x.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq      # B, L, Dh/2
    return rotate(x, jnp.concatenate([angles, angles], axis=-1))


def rotate(x: jax.Array, angles: jax.Array) -> jax.Array:
    """x [..., L, H, Dh] rotated by angles [..., L, Dh] in the half-split (rotate_half)
    layout, in float32: the rotation of `rope` and of Qwen2.5-VL's M-RoPE and 2-D RoPE."""
    x32 = x.astype(jnp.float32)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    angles = angles[..., None, :]
    return (x32 * jnp.cos(angles) + rotated * jnp.sin(angles)).astype(x.dtype)


class EncoderBlock(nn.Module):
    """CLIP's pre-LN transformer block as a scan body.

    x = x + attn(ln1(x)); x = x + mlp(ln2(x)). Params: ln1, attn (query/key/value/out),
    ln2, mlp (fc1, fc2). `__call__` is the scan body: carry (x [B', L, D], buf), slot -> carry;
    it writes the block's output into `buf[slot]` (buf [K+1, ...] collects chosen layers'
    outputs; slot K is scratch). `forward` is the block itself (rematerialized when `remat`).
    `layout` says how the carry is attended: "tokens" (x is [B', L, D] already), "frame"
    (x [B, T', S, D], each tubelet's S tokens attend within the tubelet) or "joint" (all
    T' x S tokens of a clip attend to each other).
    """

    width: int
    heads: int
    mlp_dim: int
    activation: str = "quick_gelu"
    eps: float = 1e-5
    causal: bool = False
    remat: bool = False
    dtype: Dtype = jnp.float32
    layout: str = "tokens"

    def setup(self):
        self.ln1 = layer_norm(self.eps, self.dtype)
        self.attn = Attention(self.heads, self.heads, self.width // self.heads, self.width,
                              use_bias=True, dtype=self.dtype)
        self.ln2 = layer_norm(self.eps, self.dtype)
        self.mlp = MLP(self.mlp_dim, self.width, self.activation, dtype=self.dtype)

    def forward(self, x, mask):
        """x [B', L, D], mask [B', 1, L, L] bool or None -> [B', L, D]."""
        x = constrain(x, ("batch", "length", "embed"))
        x = x + self.attn(self.ln1(x), mask=mask, is_causal=self.causal)
        x = x + self.mlp(self.ln2(x))
        return constrain(x, ("batch", "length", "embed"))

    def __call__(self, carry, slot, mask=None):
        x, buf = carry
        forward = (nn.remat(EncoderBlock.forward, prevent_cse=False) if self.remat
                   else EncoderBlock.forward)
        if self.layout == "frame":      # B, T', S, D -> B T', S, D
            tokens = x.reshape((-1,) + x.shape[2:])
        elif self.layout == "joint":    # B, T', S, D -> B, T' S, D
            tokens = x.reshape(x.shape[0], -1, x.shape[-1])
        else:
            tokens = x
        x = forward(self, tokens, mask).reshape(x.shape)
        if buf is not None:
            buf = jax.lax.dynamic_update_index_in_dim(buf, x.astype(buf.dtype), slot, 0)
        return (x, buf), None


def scan_blocks(block: type[nn.Module], depth: int, name: str = "layers", **kwargs):
    """`block` scanned over `depth` layers: params stacked on a leading (unsharded) axis.

    The returned module is called as `(carry, slots[depth], *broadcast_args)`.
    """
    return nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                   in_axes=(0, nn.broadcast), length=depth,
                   metadata_params={nn.PARTITION_NAME: None})(name=name, **kwargs)
