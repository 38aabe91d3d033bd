"""RAE (paper 000 eqs. 8-13): shapes, PyTorch-rule adaptive pooling, prompt assembly."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tvad_jax.models import rae

rng = np.random.default_rng(0)


def numpy_adaptive_pool(x, out):
    """Loop transcription of torch.nn.AdaptiveAvgPool2d on x [h, w, C]."""
    h, w = x.shape[:2]
    y = np.zeros((out[0], out[1], x.shape[2]))
    for i in range(out[0]):
        hs, he = int(np.floor(i * h / out[0])), int(np.ceil((i + 1) * h / out[0]))
        for j in range(out[1]):
            ws, we = int(np.floor(j * w / out[1])), int(np.ceil((j + 1) * w / out[1]))
            y[i, j] = x[hs:he, ws:we].mean((0, 1))
    return y


@pytest.mark.parametrize("h,w", [(3, 3), (4, 5), (7, 8), (2, 11), (12, 12)])
def test_adaptive_pool_matches_torch_rule(h, w):
    x = rng.standard_normal((2, h, w, 3))
    got = rae.adaptive_avg_pool(jnp.asarray(x, jnp.float32), (3, 3))
    want = np.stack([numpy_adaptive_pool(xi, (3, 3)) for xi in x])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_rae_shapes_and_motion():
    cfg = rae.RAEConfig(dim=16, hidden=8, num_base=2, mlp_dim=12)
    B, T, h, w = 2, 4, 5, 7
    maps = jnp.asarray(rng.random((B, T, h, w, 2)), jnp.float32)
    model = rae.RAE(cfg)
    apply = jax.jit(model.apply)
    params = nn.unbox(jax.jit(model.init)(jax.random.key(0), maps)["params"])
    out = apply({"params": params}, maps)
    assert cfg.prompts_per_step == 2 + 9 + 1
    assert out.shape == (B, T - 1, 12, 16)
    # the base prompt is the same at every step and batch row
    base = jnp.broadcast_to(params["base"], (B, T - 1, 2, 16))
    np.testing.assert_array_equal(out[:, :, :2], base)
    # eq. 8: a static clip has zero motion, so every step gets the same prompts
    static = jnp.broadcast_to(maps[:, :1], maps.shape)
    still = apply({"params": params}, static)
    np.testing.assert_allclose(still, jnp.broadcast_to(still[:, :1], still.shape), atol=1e-6)
    # adding a constant to every map changes nothing (only differences are seen)
    np.testing.assert_allclose(apply({"params": params}, maps + 3.0), out, atol=1e-5)
    np.testing.assert_allclose(rae.motion(maps), maps[:, 1:] - maps[:, :-1])


def test_rae_level_sees_the_heat_beside_its_change():
    """`level=True`: each step also reads its later tubelet's maps, so a constant offset of
    the heat (invisible to eq. 8) changes the prompts."""
    cfg = rae.RAEConfig(dim=16, hidden=8, num_base=2, level=True)
    maps = jnp.asarray(rng.random((2, 4, 5, 7, 2)), jnp.float32)
    model = rae.RAE(cfg)
    params = nn.unbox(model.init(jax.random.key(0), maps)["params"])
    assert params["conv_0"]["kernel"].shape == (3, 3, 4, 8)
    np.testing.assert_allclose(rae.motion(maps, level=True)[..., :2], rae.motion(maps))
    np.testing.assert_allclose(rae.motion(maps, level=True)[..., 2:], maps[:, 1:])
    out = model.apply({"params": params}, maps)
    shifted = model.apply({"params": params}, maps + 0.5)
    assert np.abs(np.asarray(shifted - out))[:, :, 2:].min() > 0   # every non-base prompt moves


@pytest.mark.parametrize("pool", ["mean", "max"])
def test_rae_regions_and_global_from_numpy(pool):
    """Eqs. 10-11 from the conv features: region MLP of each 3x3 bin, global MLP of the mean
    (or, with `global_pool="max"`, of the maximum)."""
    cfg = rae.RAEConfig(dim=6, hidden=4, conv_layers=1, num_base=1, global_pool=pool)
    B, T, h, w = 1, 2, 4, 5
    maps = rng.standard_normal((B, T, h, w, 2)).astype(np.float32)
    model = rae.RAE(cfg)
    apply = jax.jit(model.apply)
    p = nn.unbox(jax.jit(model.init)(jax.random.key(1), maps)["params"])
    out = np.asarray(apply({"params": p}, maps))
    pn = jax.tree.map(lambda x: np.asarray(x, np.float64), p)
    from scipy.special import erf
    gelu = lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2)))
    x = np.pad((maps[:, 1] - maps[:, 0])[0].astype(np.float64), ((1, 1), (1, 1), (0, 0)))
    k = pn["conv_0"]["kernel"]                                   # 3, 3, 2, C_h
    f = np.zeros((h, w, 4))
    for i in range(h):
        for j in range(w):
            f[i, j] = np.einsum("abc,abco->o", x[i:i + 3, j:j + 3], k)
    f = gelu(f + pn["conv_0"]["bias"])

    def mlp(q, v):
        hid = gelu(v @ q["fc1"]["kernel"] + q["fc1"]["bias"])
        return hid @ q["fc2"]["kernel"] + q["fc2"]["bias"]
    regions = mlp(pn["region"], numpy_adaptive_pool(f, (3, 3)).reshape(9, 4))
    glob = mlp(pn["global"], f.mean((0, 1)) if pool == "mean" else f.max((0, 1)))
    np.testing.assert_allclose(out[0, 0, 1:10], regions, atol=1e-5)
    np.testing.assert_allclose(out[0, 0, 10], glob, atol=1e-5)


def test_rae_config_rejects_an_unknown_global_pool():
    with pytest.raises(ValueError, match="global_pool"):
        rae.RAEConfig(global_pool="median")


@pytest.mark.parametrize("with_special", [False, True])
def test_assemble_prompt_order(with_special):
    B, Tv, N, S, K, Lq, D = 2, 2, 3, 3, 4, 5, 6
    p_v = jnp.asarray(rng.standard_normal((B, Tv, N, D)), jnp.float32)
    p_an = jnp.asarray(rng.standard_normal((B, S, K, D)), jnp.float32)
    p_q = jnp.asarray(rng.standard_normal((B, Lq, D)), jnp.float32)
    special = jnp.asarray(rng.standard_normal((3, D)), jnp.float32) if with_special else None
    out = np.asarray(rae.assemble_prompt(p_v, p_an, p_q, special))
    assert out.shape == (B, rae.prompt_length(Tv * N, S, K, Lq, with_special), D)
    rows = [np.asarray(p_v).reshape(B, -1, D)]
    if with_special:
        st, sep, end = (np.broadcast_to(np.asarray(special)[i], (B, 1, D)) for i in range(3))
        rows.append(st)
        for s in range(S):
            rows.append(np.asarray(p_an)[:, s])
            rows.append(sep if s < S - 1 else end)
    else:
        rows += [np.asarray(p_an)[:, s] for s in range(S)]
    rows.append(np.asarray(p_q))
    np.testing.assert_array_equal(out, np.concatenate(rows, axis=1))
    if with_special:
        assert out.shape[1] == Tv * N + S * K + Lq + S + 1
