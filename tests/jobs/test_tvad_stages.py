"""Stage-1 loss wiring and stage 2's swapped visual tokens of `jobs.tvad_stages` (the stages
end to end: tests/jobs/test_tvad.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tvad_jax import config as config_lib
from tvad_jax.infer.features import cache_stream
from tvad_jax.jobs.config import Stage1Config, Stage2Config
from tvad_jax.jobs.tvad_stages import SwapVisual, stage1_spec
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


def _decoder_view_cache(videos: int) -> list[dict]:
    """One row per video, as the decoder's view caches it: visual tokens that name the video."""
    return [{"visual": np.full((2, 3), v, np.float32), "maps": np.full((2, 2), -v, np.float32),
             "video_index": np.int32(v)} for v in range(videos)]


def test_swapped_examples_read_another_videos_tokens_and_answer_the_judgment_only():
    cache = _decoder_view_cache(6)
    weights = np.arange(6 * 4, dtype=np.float32).reshape(6, 4) + 1    # every token scored
    judgment_only = np.zeros_like(weights)
    judgment_only[:, 0] = 9.0                                         # the answer's token
    texts = {"weights": weights}

    def examples(rate):
        stream = cache_stream(cache, 2, ("visual", "maps", "video_index"), seed=3, texts=texts,
                              augment=SwapVisual(np.stack([r["visual"] for r in cache]), rate,
                                                 judgment_only))
        batches = [next(stream) for _ in range(30)]
        return [{k: b[k][i] for k in b} for b in batches for i in range(2)]

    kept = examples(0.0)
    for e in kept:                                                    # nothing changed
        v = int(e["video_index"])
        assert (e["visual"] == v).all() and (e["weights"] == weights[v]).all()
    swapped = examples(1.0)
    assert [e["video_index"] for e in swapped] == [e["video_index"] for e in kept]
    sources = []
    for e in swapped:
        v = int(e["video_index"])
        assert (e["maps"] == -v).all()                                # its own heat ...
        assert (e["weights"] == judgment_only[v]).all()               # ... and judgment
        sources.append(int(e["visual"][0, 0]))
        assert (e["visual"] == sources[-1]).all()                     # a whole cache row's
    assert np.mean([s != int(e["video_index"]) for s, e in zip(sources, swapped)]) > 0.6
    half = examples(0.5)
    changed = np.mean([(e["weights"] != weights[int(e["video_index"])]).any() for e in half])
    assert 0.3 < changed < 0.7
    assert all((a["visual"] == b["visual"]).all() for a, b in zip(half, examples(0.5)))


def test_with_judgment_from_swap_the_kept_examples_train_every_answer_but_the_judgment():
    cache = _decoder_view_cache(6)
    weights = np.ones((6, 4), np.float32)
    judgment_only = np.zeros_like(weights)
    judgment_only[:, 0] = 4.0                                         # the answer's token
    wording_only = np.ones_like(weights)
    wording_only[:, 0] = 0.0
    stream = cache_stream(cache, 2, ("visual", "maps", "video_index"), seed=3,
                          texts={"weights": weights},
                          augment=SwapVisual(np.stack([r["visual"] for r in cache]), 0.5,
                                             judgment_only, wording_only))
    examples = [{k: b[k][i] for k in b} for b in (next(stream) for _ in range(30))
                for i in range(2)]
    swapped = [(e["weights"] == judgment_only[0]).all() for e in examples]
    kept = [(e["weights"] == wording_only[0]).all() for e in examples]
    assert all(a != b for a, b in zip(swapped, kept))                # one or the other
    assert 0.3 < np.mean(swapped) < 0.7
    for e, was_kept in zip(examples, kept):
        if was_kept:                                                  # its own tokens
            assert (e["visual"] == int(e["video_index"])).all()


def test_flipped_maps_are_the_swapped_examples_own_mirrored_in_time_and_space():
    maps = np.arange(6 * 3 * 4 * 5 * 2, dtype=np.float32).reshape(6, 3, 4, 5, 2)   # V, T', h, w, 2
    cache = [{"visual": np.full((2, 3), v, np.float32), "maps": maps[v],
              "video_index": np.int32(v)} for v in range(6)]
    weights = np.ones((6, 4), np.float32)
    judgment_only = np.zeros_like(weights)
    judgment_only[:, 0] = 4.0
    stream = cache_stream(cache, 2, ("visual", "maps", "video_index"), seed=3,
                          texts={"weights": weights},
                          augment=SwapVisual(np.stack([r["visual"] for r in cache]), 0.5,
                                             judgment_only, flip_maps=True))
    examples = [{k: b[k][i] for k in b} for b in (next(stream) for _ in range(40))
                for i in range(2)]
    mirrors = {axes: 0 for axes in ((), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2))}
    for e in examples:
        own = maps[int(e["video_index"])]
        if (e["weights"] == weights[0]).all():                        # not swapped: as it was
            assert (e["maps"] == own).all()
            continue
        found = [axes for axes in mirrors if (e["maps"] == np.flip(own, axes)).all()]
        assert len(found) == 1                                        # one mirror of its own
        mirrors[found[0]] += 1
    assert sum(mirrors.values()) > 25 and sum(n > 0 for n in mirrors.values()) >= 6


def test_visual_swap_is_a_fraction():
    assert Stage2Config(visual_swap=0.5).visual_swap == 0.5
    with pytest.raises(config_lib.ConfigError, match="visual_swap"):
        config_lib.apply_overrides(Stage2Config(), ["visual_swap=1.5"])
