"""S3M scores of a split: each window's prediction error, credited to the frames it predicts.

A window's score is its mean squared prediction error in standardized units
(`models.s3m.object_scores`); a frame's score is the max over the windows crediting it, i.e.
over its objects (`models.s3m.frame_scores`); frames nothing credits score 0. Errors e are
mapped into [0, 1) by e / (e + e_ref), e_ref the median window error on the training split:
monotone, so the micro AUC is unchanged, and it keeps the macro AUC's padding meaningful.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tvad_jax.data.track_windows import Windows, make_windows, sequences
from tvad_jax.models import s3m
from tvad_jax.models.predictors import TrackPredictor


def window_errors(model: TrackPredictor, params: Any, windows: Windows,
                  chunk: int) -> np.ndarray:
    """Mean squared prediction error (N,) of every window, in fixed-size jitted chunks."""
    n = len(windows)
    if n == 0:
        return np.zeros(0, np.float32)
    chunk = max(1, min(chunk, n))
    fn = jax.jit(lambda p, x, y: s3m.object_scores(model.apply({"params": p}, x), y))
    out = []
    for start in range(0, n, chunk):
        x, y = windows.past[start:start + chunk], windows.future[start:start + chunk]
        k = len(x)
        if k < chunk:  # pad the last chunk to keep one compiled shape
            pad = ((0, chunk - k), (0, 0), (0, 0))
            x, y = np.pad(x, pad), np.pad(y, pad)
        out.append(np.asarray(fn(params, x, y))[:k])
    return np.concatenate(out)


def frame_scores(windows: Windows, errors: np.ndarray, error_ref: float,
                 future: int) -> dict[str, np.ndarray]:
    """Per-video frame scores (T,) in [0, 1): max over the windows predicting each frame of
    e / (e + e_ref); 0 where no window predicts the frame."""
    scaled = errors / (errors + max(float(error_ref), 1e-12))
    out = {}
    for v, (name, T) in enumerate(zip(windows.videos, windows.num_frames)):
        sel = windows.video == v
        scores = np.repeat(scaled[sel], future)  # each window credits its L_f frames
        frames = windows.frames[sel].reshape(-1)
        out[name] = np.asarray(s3m.frame_scores(jnp.asarray(scores, jnp.float32),
                                                jnp.asarray(frames), T), np.float64)
    return out


def score_videos(model: TrackPredictor, params: Any, stats: dict, sidecars: list[tuple[str, dict]],
                 chunk: int) -> tuple[dict[str, np.ndarray], Windows]:
    """S3M frame scores (T,) of every video (its sidecar's object tracks) and the windows
    behind them; `stats` holds the training split's feature mean/std and error_ref."""
    past, future = model.config.past, model.config.future
    windows = make_windows(sequences(sidecars), stats["mean"], stats["std"], past, future)
    errors = window_errors(model, params, windows, chunk)
    return frame_scores(windows, errors, stats["error_ref"], future), windows


def anomaly_types(sidecar: dict) -> set[str]:
    """The anomaly types acted out in a video (empty for a normal one)."""
    return {o["anomaly_type"] for o in sidecar["objects"] if o.get("anomaly")}
