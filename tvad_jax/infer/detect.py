"""Detection on video files: per-frame scores, pixel heatmaps, a threshold-free judgment.

    detector = Detector(load_model("runs/tvad-.../model"))
    result = detector(read_video("clip.mp4"), name="clip")
    result.scores      # [T] max heat per frame
    result.heatmaps    # [T, H, W] abnormal probability at the video's resolution
    result.judgment    # "yes" / "no": the decoder's answer to the judgment question
    write_overlay("clip.overlay.mp4", frames, result.heatmaps)
    for summary in detect_videos(model, paths, out_dir): ...    # `tvad detect`
    for question, answer in chat_about_video(model, path, ask): ...   # `tvad chat`

Frames are resized to the backbone's input size and normalized like the training clips. The
AHD scores clips cut as `model.clip_view` says (heatmaps averaged where clips overlap); the
decoder sees the whole-video view `model.video_view` (frames start, start + step, ...; the
last frame repeated when the video is shorter), its RAE the AHD's maps pooled onto it. No
threshold is set by the user anywhere: the decoder's yes/no is the argmax of its own words,
and `heatmap_judgment` is the argmax of the AHD's two classes (some pixel more abnormal than
normal, i.e. heat > 0.5).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import jax.numpy as jnp
import numpy as np

from tvad_jax.data.annotate import JUDGMENT_QUESTION
from tvad_jax.data.dialogues import question_length
from tvad_jax.data.files import save_npy
from tvad_jax.data.pipeline import clip_starts, normalize_frames
from tvad_jax.data.tfds_builders import RESAMPLE
from tvad_jax.data.video_io import read_video, resize_frames, write_video
from tvad_jax.infer.dialogue import QUESTION_LEN, Dialogue, normalize_yes_no
from tvad_jax.infer.features import make_encoder
from tvad_jax.infer.heatmaps import maps_on_view, per_frame
from tvad_jax.models.ahd import upsample
from tvad_jax.models.tvad import TVADModel, abnormal_heatmap, clip_prompt_maps
from tvad_jax.runs import progress

CHAT_QUESTION_LEN = 64      # tokens per typed question in `tvad chat`


@dataclasses.dataclass
class VideoFeatures:
    """The frozen backbone's view of one video."""

    clip_hidden: np.ndarray       # [C, I, T', 1+N, D_v] AHD input of each clip
    clip_starts: np.ndarray       # [C]
    video_visual: np.ndarray      # [S_v, D] visual tokens P_V of the whole-video view
    video_maps: np.ndarray | None  # [T'_v, h, w, 2] the RAE's input on it (anomaly prompts)
    num_frames: int
    size: tuple[int, int]         # (H, W) of the original frames


@dataclasses.dataclass
class Detection:
    name: str
    scores: np.ndarray            # [T]
    heatmaps: np.ndarray | None   # [T, H, W] (None for the plain backbone)
    answer: str | None            # the decoder's judgment answer (None without a dialogue)
    judgment: str | None          # normalize_yes_no(answer)
    heatmap_judgment: str | None  # "yes" if some pixel's abnormal class wins

    def summary(self) -> dict:
        return {"video": self.name, "frames": int(len(self.scores)),
                "max_score": float(self.scores.max()) if len(self.scores) else None,
                "answer": self.answer, "judgment": self.judgment,
                "heatmap_judgment": self.heatmap_judgment}


class Detector:
    """A T-VAD model applied to raw RGB frames; compiled once per frame shape."""

    def __init__(self, model: TVADModel, max_new_tokens: int = 48, batch_size: int = 8):
        self.model = model
        bcfg = model.backbone.cfg
        self.frame_size = bcfg.vision.frame_size                  # (H, W) the tower takes
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.encode = make_encoder(bcfg, model.backbone.params)

    def preprocess(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [T, H, W, 3] -> normalized float32 [T, H', W', 3] at the backbone's size, resized
        and normalized as `tvad data prepare` and the loader do (the frames of a prepared video
        of that size, to the bit)."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} "
                             f"{frames.shape}")
        resample = RESAMPLE[self.model.resample]
        return normalize_frames(resize_frames(frames, *self.frame_size, resample))

    def features(self, frames: np.ndarray) -> VideoFeatures:
        x = self.preprocess(frames)
        n = len(x)
        view = self.model.clip_view
        starts = clip_starts(n, view.clip_len, view.clip_stride, view.frame_step, view.pad_last,
                             view.interleave)
        clips = [x[np.minimum(s + np.arange(view.clip_len) * view.frame_step, n - 1)]
                 for s in starts]
        hidden = []
        for lo in range(0, len(clips), self.batch_size):
            chunk = np.stack(clips[lo:lo + self.batch_size])
            m = len(chunk)
            if m < self.batch_size:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch_size - m, 0)])
            hidden.append(np.asarray(self.encode(chunk)[0])[:m])
        vv = self.model.video_view
        video = x[np.minimum(np.arange(vv.clip_len) * vv.frame_step, n - 1)]
        v_visual = np.asarray(self.encode(video[None])[1])[0]
        hidden, starts = np.concatenate(hidden), np.asarray(starts)
        maps = None
        if self.model.cfg.anomaly_prompts:
            p = self.model.params
            clip_maps = clip_prompt_maps(self.model.cfg, p["ahd"], hidden, p["text"])
            maps = maps_on_view(np.asarray(clip_maps), self.model.clip_view,
                                np.zeros(len(starts), np.int64), starts, [n], vv, [(0, 0)])[0]
        return VideoFeatures(hidden, starts, v_visual, maps, n, tuple(frames.shape[1:3]))

    def heatmaps(self, feats: VideoFeatures) -> np.ndarray:
        """[T, H, W] abnormal probability per pixel at the video's resolution."""
        p = self.model.params
        maps = abnormal_heatmap(self.model.cfg, p["ahd"], feats.clip_hidden, p["text"])
        frames = per_frame(np.asarray(maps), np.zeros(len(maps), np.int64), feats.clip_starts,
                           [feats.num_frames], self.model.clip_view)[0]
        return np.asarray(upsample(jnp.asarray(frames), feats.size))

    def __call__(self, frames: np.ndarray, name: str = "video") -> Detection:
        feats = self.features(frames)
        maps = scores = heat_judgment = None
        if self.model.cfg.has_ahd:
            maps = self.heatmaps(feats)
            scores = maps.reshape(len(maps), -1).max(axis=1)
            heat_judgment = "yes" if scores.max() > 0.5 else "no"
        answer = None
        if self.model.cfg.variant != "no_rae":
            question_len = max(QUESTION_LEN, question_length(self.model.backbone.tokenizer,
                                                             JUDGMENT_QUESTION))
            chat = Dialogue(self.model, feats.video_visual[None], _batch(feats.video_maps),
                            max_turns=1, max_new_tokens=self.max_new_tokens,
                            question_len=question_len)
            answer = chat.ask(JUDGMENT_QUESTION)[0]
        if scores is None:
            scores = np.zeros(feats.num_frames, np.float32)
        return Detection(name, scores, maps, answer,
                         None if answer is None else normalize_yes_no(answer), heat_judgment)


def overlay(frames: np.ndarray, maps: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """uint8 frames [T, H, W, 3] with the heatmaps [T, H, W] in 'jet' colours blended in,
    opacity alpha * heat (cold pixels stay untouched)."""
    from matplotlib import colormaps  # deferred: matplotlib only for overlay videos

    colours = colormaps["jet"](np.clip(maps, 0, 1))[..., :3] * 255.0     # T, H, W, 3
    weight = alpha * np.clip(maps, 0, 1)[..., None]
    out = (1 - weight) * frames.astype(np.float32) + weight * colours
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def write_overlay(path: str | Path, frames: np.ndarray, maps: np.ndarray, fps: int = 30
                  ) -> Path:
    """The heatmap video (H.264 needs even sizes: an odd last row/column is dropped)."""
    video = overlay(frames, maps)
    h, w = video.shape[1] // 2 * 2, video.shape[2] // 2 * 2
    return write_video(path, np.ascontiguousarray(video[:, :h, :w]), fps=fps)


def detect_videos(model: TVADModel, paths: Sequence[Path], out_dir: Path,
                  max_new_tokens: int = 48, overlay: bool = True) -> Iterator[dict]:
    """Run the detector on video files: per video `<name>.scores.npy`, `<name>.overlay.mp4`
    (with `overlay` and an AHD) and one line of `detections.jsonl` in `out_dir`; yields each
    video's summary as it is written. `detections.jsonl` appears only once every video is
    done (it is written under a temporary name), so a failure midway leaves none."""
    detector = Detector(model, max_new_tokens=max_new_tokens)
    final = out_dir / "detections.jsonl"
    partial = out_dir / f".detections.jsonl.tmp{os.getpid()}"
    try:
        with partial.open("w") as out:
            for path in progress(paths, "detect", unit="video"):
                frames = read_video(path)
                result = detector(frames, name=path.stem)
                save_npy(out_dir / f"{path.stem}.scores.npy", result.scores)
                if result.heatmaps is not None and overlay:
                    write_overlay(out_dir / f"{path.stem}.overlay.mp4", frames, result.heatmaps)
                out.write(json.dumps(result.summary()) + "\n")
                yield result.summary()
        partial.replace(final)
    finally:
        partial.unlink(missing_ok=True)


def chat_about_video(model: TVADModel, path: Path, ask: Callable[[], str], max_turns: int = 8,
                     max_new_tokens: int = 48) -> Iterator[tuple[str, str]]:
    """A multi-turn dialogue about one video, the KV cache reused across turns: questions
    come from `ask()` (StopIteration or an empty question ends it); the (question, answer)
    turns run as the result is iterated. The video is read here, at the call, so that a bad
    one fails before the caller makes any output."""
    feats = Detector(model).features(read_video(path))
    chat = Dialogue(model, feats.video_visual[None], _batch(feats.video_maps),
                    max_turns=max_turns, max_new_tokens=max_new_tokens,
                    question_len=CHAT_QUESTION_LEN)
    return _turns(chat, ask, max_turns)


def _turns(chat: Dialogue, ask: Callable[[], str], max_turns: int) -> Iterator[tuple[str, str]]:
    """(question, answer) per turn until `ask` runs out or `max_turns` are done."""
    for _ in range(max_turns):
        try:
            question = ask()
        except StopIteration:
            return
        if not question:
            return
        yield question, chat.ask(question)[0]


def _batch(maps: np.ndarray | None) -> np.ndarray | None:
    return None if maps is None else maps[None]
