"""The RAE's input on the decoder's view: the AHD's clip-view maps pooled per tubelet."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tvad_jax.infer.features import MemoryFeatures
from tvad_jax.infer.heatmaps import pool_to_view, with_decoder_view_maps
from tvad_jax.models.ahd import AHD, AHDConfig
from tvad_jax.models.tvad import ClipView, TVADConfig, clip_prompt_maps


def test_pool_to_view_averages_the_frames_each_tubelet_spans():
    frames = np.arange(10, dtype=np.float32)[:, None]               # frame i holds i
    view = ClipView(clip_len=4, frame_step=2)                        # tubelets span 4 frames
    np.testing.assert_allclose(pool_to_view(frames, 1, view, 2)[:, 0], [2.5, 6.5])
    # past the end: cut at the last frame, then the last frame alone
    longer = ClipView(clip_len=6, frame_step=2)
    np.testing.assert_allclose(pool_to_view(frames, 4, longer, 2)[:, 0], [5.5, 8.5, 9.0])


def test_decoder_view_maps_pool_the_clip_views_maps():
    rng = np.random.default_rng(0)
    tcfg = TVADConfig(ahd=AHDConfig(num_layers=1))
    text = jnp.asarray(rng.standard_normal((2, 8)), jnp.float32)
    hidden = rng.standard_normal((2, 1, 2, 5, 8)).astype(np.float32)  # 2 clips: C, I, T', 1+N, D
    params = AHD(tcfg.ahd).init(jax.random.key(0), [jnp.asarray(hidden[:, 0])], text)["params"]
    clip_view = ClipView(clip_len=4, clip_stride=4)                  # frames 0-3 and 4-7
    clips = MemoryFeatures({"hidden": hidden, "video_index": np.zeros(2, np.int64),
                            "start": np.array([0, 4])},
                           {"view": dataclasses.asdict(clip_view), "lengths": [8]})
    video_view = ClipView(clip_len=4, clip_stride=1 << 20, frame_step=2)   # frames 0, 2, 4, 6
    videos = MemoryFeatures({"visual": np.zeros((1, 3, 4), np.float32),
                             "video_index": np.zeros(1, np.int64), "start": np.zeros(1)},
                            {"view": dataclasses.asdict(video_view), "lengths": [8]})
    source = with_decoder_view_maps(tcfg, params, text, clips, videos)
    expected = np.asarray(clip_prompt_maps(tcfg, params, hidden, text)).mean(axis=1)  # 2, h, w, 2
    row = source[0]
    assert set(row) == {"visual", "video_index", "start", "maps"}
    np.testing.assert_allclose(row["maps"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(source.column("maps"), row["maps"][None])
