"""AHD heatmaps of every clip of a feature cache, and per video.

    maps = video_heatmaps(tcfg, ahd_params, text, cache)   # [n_frames, h, w] per video
"""
from __future__ import annotations

import numpy as np

from tvad_jax.data.pipeline import scatter_clips
from tvad_jax.infer.features import FeatureCache, cache_stream
from tvad_jax.models.tvad import TVADConfig, abnormal_heatmap


def clip_heatmaps(tcfg: TVADConfig, ahd_params, text, cache: FeatureCache,
                  batch_size: int = 16) -> np.ndarray:
    """AHD heatmaps [C, T', h, w] of every clip of a cache."""
    out = []
    for batch in cache_stream(cache, batch_size, ("hidden",), shuffle=False):
        n = len(batch["hidden"])
        hidden = batch["hidden"]
        if n < batch_size:  # one compiled shape
            hidden = np.concatenate([hidden, np.zeros((batch_size - n,) + hidden.shape[1:],
                                                      hidden.dtype)])
        out.append(np.asarray(abnormal_heatmap(tcfg, ahd_params, hidden, text))[:n])
    return np.concatenate(out)


def video_heatmaps(tcfg: TVADConfig, ahd_params, text, cache: FeatureCache
                   ) -> list[np.ndarray]:
    """Per-video patch heatmaps [n, h, w] of a cached split (clips averaged where they
    overlap)."""
    return scatter_clips(clip_heatmaps(tcfg, ahd_params, text, cache),
                         cache.column("video_index"), cache.column("start"),
                         cache.meta["lengths"], frame_step=cache.meta["view"]["frame_step"])
