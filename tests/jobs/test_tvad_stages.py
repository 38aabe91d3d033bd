"""Stage-1 loss wiring of `jobs.tvad_stages` (the stages end to end: tests/jobs/test_tvad.py)."""
import jax
import jax.numpy as jnp
import numpy as np

from tvad_jax.jobs.config import Stage1Config
from tvad_jax.jobs.tvad_stages import stage1_spec
from tvad_jax.models import ahd
from tvad_jax.models.ahd import AHDConfig
from tvad_jax.models.tvad import TVADConfig, heatmaps


def test_stage1_loss_adds_the_weighted_frame_loss_over_valid_tubelets():
    rng = np.random.default_rng(0)
    tcfg = TVADConfig(ahd=AHDConfig(num_layers=2))
    text = jnp.asarray(rng.standard_normal((2, 8)), jnp.float32)
    hidden = jnp.asarray(rng.standard_normal((1, 2, 2, 5, 8)), jnp.float32)  # B, I, T', 1+N, D_v
    masks = np.zeros((1, 2, 8, 8), np.uint8)
    masks[0, 0, :4, :4] = 1
    batch = {"hidden": hidden, "tubelet_masks": masks,
             "valid": np.array([[True, True, False, False]])}    # the second tubelet is padding
    plain, framed = (stage1_spec(tcfg, Stage1Config(frame_weight=w), lambda: text, (2, 2, 5, 8))
                     for w in (0.0, 3.0))
    params = plain.init_fn(jax.random.key(0))
    frozen = {"text": params.pop("text")}
    out = heatmaps(tcfg, params["ahd"], hidden, text)
    targets = ahd.patch_targets(masks, (2, 2), "max")
    first = np.array([[1.0, 0.0]])[:, :, None, None]
    expected = float(ahd.frame_loss(out.logits[:, :1], targets[:, :1]))   # valid tubelets only
    base = float(plain.loss_fn(params, frozen, batch, jax.random.key(1))[0])
    np.testing.assert_allclose(base, ahd.pixel_loss(out.logits, targets, first, 10.0, 2.0),
                               rtol=1e-5)
    np.testing.assert_allclose(float(framed.loss_fn(params, frozen, batch, jax.random.key(1))[0]),
                               base + 3.0 * expected, rtol=1e-5)
