"""AHD heatmaps of every clip of a feature cache, per video, and on the decoder's view.

    maps = video_heatmaps(tcfg, ahd_params, text, cache)   # [n_frames, h, w] per video
    source = with_decoder_view_maps(tcfg, ahd_params, text, clip_cache, video_cache)
    source[i]["maps"]                                       # [T'_v, h, w, 2], the RAE's input
    source = decoder_view(model, cfg, split)                # the same for a trained model

The AHD is trained on clips of the clip view (consecutive frames); the decoder sees a sparser
whole-video view (every 4th frame by default), on which the frozen tower's frame-difference
features, and with them the heat, are out of distribution (video max-heat AUC 0.64 / 0.71 /
0.55 on `train` / `test_seen` / `test` against 0.88 / 0.76 / 0.72 on the clip view, backbone
v9). So the RAE reads the clip view's maps pooled onto the decoder's tubelets instead.
"""
from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from tvad_jax.data.pipeline import scatter_clips
from tvad_jax.infer.features import FeatureCache, cache_stream, feature_cache
from tvad_jax.models.tvad import ClipView, TVADConfig, TVADModel, abnormal_heatmap, clip_prompt_maps


def _per_clip(fn: Callable[[np.ndarray], jax.Array], cache: FeatureCache,
              batch_size: int) -> np.ndarray:
    """fn(hidden [batch_size, ...]) of every clip of a cache, in order, [C, ...]."""
    out = []
    for batch in cache_stream(cache, batch_size, ("hidden",), shuffle=False):
        n = len(batch["hidden"])
        hidden = batch["hidden"]
        if n < batch_size:  # one compiled shape
            hidden = np.concatenate([hidden, np.zeros((batch_size - n,) + hidden.shape[1:],
                                                      hidden.dtype)])
        out.append(np.asarray(fn(hidden))[:n])
    return np.concatenate(out)


def clip_heatmaps(tcfg: TVADConfig, ahd_params, text, cache: FeatureCache,
                  batch_size: int = 16) -> np.ndarray:
    """AHD heatmaps [C, T', h, w] of every clip of a cache."""
    return _per_clip(lambda h: abnormal_heatmap(tcfg, ahd_params, h, text), cache, batch_size)


def per_frame(clip_maps: np.ndarray, video_index, starts, lengths, view: ClipView
              ) -> list[np.ndarray]:
    """Per-clip tubelet outputs [C, T', ...] of `view` clips -> per-frame [n, ...] per video
    (clips averaged where they overlap)."""
    return scatter_clips(clip_maps, video_index, starts, lengths,
                         tubelet=view.clip_len // clip_maps.shape[1], frame_step=view.frame_step)


def video_heatmaps(tcfg: TVADConfig, ahd_params, text, cache: FeatureCache
                   ) -> list[np.ndarray]:
    """Per-video patch heatmaps [n, h, w] of a cached split (clips averaged where they
    overlap)."""
    return per_frame(clip_heatmaps(tcfg, ahd_params, text, cache), cache.column("video_index"),
                     cache.column("start"), cache.meta["lengths"], ClipView(**cache.meta["view"]))


def pool_to_view(frame_maps: np.ndarray, start: int, view: ClipView, tubelet: int
                 ) -> np.ndarray:
    """Per-frame maps [n, ...] of one video -> [clip_len / tubelet, ...] on a `view` clip
    starting at `start`: tubelet k's value is the mean over the frames from its first one up
    to the next tubelet's first (tubelet * frame_step frames, cut at the video's end; past
    the end, the last frame, as the clip repeats it)."""
    n = len(frame_maps)
    span = tubelet * view.frame_step
    firsts = [min(int(start) + k * span, n - 1) for k in range(view.clip_len // tubelet)]
    return np.stack([frame_maps[f:min(f + span, n)].mean(axis=0) for f in firsts])


def maps_on_view(clip_maps: np.ndarray, clip_view: ClipView, video_index, starts, lengths,
                 view: ClipView, rows) -> np.ndarray:
    """Per-clip tubelet outputs [C, T', ...] of `clip_view` clips -> [R, T'_v, ...] on the
    `view` clips `rows` ((video, start) pairs): `per_frame`, then `pool_to_view`."""
    frames = per_frame(clip_maps, video_index, starts, lengths, clip_view)
    tubelet = clip_view.clip_len // clip_maps.shape[1]
    return np.stack([pool_to_view(frames[v], s, view, tubelet) for v, s in rows])


class WithColumns:
    """A feature cache whose rows also carry per-row arrays computed elsewhere."""

    def __init__(self, cache, columns: dict[str, np.ndarray]):
        self.cache, self.columns, self.meta = cache, columns, cache.meta

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int) -> dict:
        return {**self.cache[i], **{k: v[int(i)] for k, v in self.columns.items()}}

    def column(self, name: str) -> np.ndarray:
        return self.columns[name] if name in self.columns else self.cache.column(name)


def with_decoder_view_maps(tcfg: TVADConfig, ahd_params, text, clip_cache: FeatureCache,
                           video_cache: FeatureCache) -> WithColumns:
    """`video_cache` (the decoder's view of a split) with "maps" [T'_v, h, w, 2] per row: the
    RAE's input, `prompt_maps` of the AHD on `clip_cache` (its own view of the same split),
    per frame, pooled onto each row's tubelets (`pool_to_view`)."""
    clip_maps = _per_clip(lambda h: clip_prompt_maps(tcfg, ahd_params, h, text), clip_cache, 16)
    maps = maps_on_view(clip_maps, ClipView(**clip_cache.meta["view"]),
                        clip_cache.column("video_index"), clip_cache.column("start"),
                        clip_cache.meta["lengths"], ClipView(**video_cache.meta["view"]),
                        zip(video_cache.column("video_index"), video_cache.column("start")))
    return WithColumns(video_cache, {"maps": maps})


def decoder_view(model: TVADModel, cfg, split: str, report: Callable[[str], None] = print
                 ) -> FeatureCache | WithColumns:
    """A model's decoder view of a prepared split: its cache, with the RAE's "maps" where the
    model reads anomaly prompts. cfg: the root config (`feature_cache`)."""
    cache = feature_cache(cfg, model.backbone, split, model.video_view, report)
    if not model.cfg.anomaly_prompts:
        return cache
    clip_cache = feature_cache(cfg, model.backbone, split, model.clip_view, report)
    return with_decoder_view_maps(model.cfg, model.params["ahd"], model.params["text"],
                                  clip_cache, cache)
