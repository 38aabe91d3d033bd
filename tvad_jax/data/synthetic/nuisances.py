"""Per-video nuisances that make raw motion energy a poor anomaly score: fog, sensor noise,
lighting drift, passing cloud shadows and camera shake (traffic density and occluding props
are chosen by the planner and the scene)."""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Nuisances:
    fog: float              # 0 = clear; blend weight towards the fog colour at the horizon
    noise_sigma: float      # sensor noise std in [0, 1] units
    drift_amplitude: float  # relative amplitude of the global lighting drift
    drift_period: float     # frames per drift cycle
    drift_phase: float
    cloud: bool             # a soft shadow drifting across the frame
    cloud_speed: float
    shake: bool             # whole-frame 1-pixel camera jitter
    crowd: bool
    fast_traffic: bool


def sample_nuisances(rng: np.random.Generator, num_frames: int) -> Nuisances:
    return Nuisances(
        fog=float(rng.uniform(0.25, 0.55)) if rng.random() < 0.3 else 0.0,
        noise_sigma=float(rng.uniform(6, 12) if rng.random() < 0.3 else rng.uniform(1, 5)) / 255,
        drift_amplitude=float(rng.uniform(0.03, 0.15)),
        drift_period=float(rng.uniform(0.5, 2.0) * num_frames),
        drift_phase=float(rng.uniform(0, 2 * np.pi)),
        cloud=bool(rng.random() < 0.3),
        cloud_speed=float(rng.uniform(0.8, 2.0) * rng.choice([-1, 1])),
        shake=bool(rng.random() < 0.2),
        crowd=bool(rng.random() < 0.3),
        fast_traffic=bool(rng.random() < 0.4),
    )


def camera_offsets(n: Nuisances, rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """[T, 2] integer (dy, dx) shifts; zeros unless the camera shakes."""
    if not n.shake:
        return np.zeros((num_frames, 2), np.int64)
    return rng.integers(-1, 2, (num_frames, 2))


def shift(image: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Shift an image by (dy, dx) whole pixels, repeating the border."""
    dy, dx = int(offset[0]), int(offset[1])
    h, w = image.shape[:2]
    rows = np.clip(np.arange(h) - dy, 0, h - 1)
    cols = np.clip(np.arange(w) - dx, 0, w - 1)
    return image[rows][:, cols]


def apply_photometric(frame: np.ndarray, t: int, n: Nuisances,
                      rng: np.random.Generator) -> np.ndarray:
    """Lighting drift, cloud shadow, fog and noise on a float [H, W, 3] frame -> uint8."""
    h, w = frame.shape[:2]
    gain = 1.0 + n.drift_amplitude * np.sin(2 * np.pi * t / n.drift_period + n.drift_phase)
    out = frame * gain
    if n.cloud:
        cx = (w * 0.5 + n.cloud_speed * (t - 32)) % (1.6 * w) - 0.3 * w
        xs = np.arange(w)[None, :, None]
        ys = np.arange(h)[:, None, None]
        shadow = np.exp(-(((xs - cx) / (0.3 * w)) ** 2 + ((ys - 0.6 * h) / (0.5 * h)) ** 2))
        out = out * (1.0 - 0.35 * shadow)
    if n.fog > 0:
        depth = np.linspace(1.0, 0.45, h)[:, None, None]   # thicker towards the horizon
        weight = n.fog * depth
        out = out * (1 - weight) + 0.78 * weight
    out = out + rng.normal(0.0, n.noise_sigma, out.shape)
    return (np.clip(out, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
