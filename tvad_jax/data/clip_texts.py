"""The text of every clip for backbone pretraining, and the grain transform that attaches it.

    texts = clip_texts(prepared_dir, reader, "train", loader, regions=4, crop_every=4)
    arrays = encode_texts(texts, tokenizer, caption_len=48, qa_len=48, regions=4)
    ds = make_dataset(source, lengths, loader, transform=AttachText(arrays, index, 8, 2))

Per clip: a contrastive caption (the most visible object's description and a zone statement,
often negated), the scene description, one QA pair (rotating over the clip's questions), the
descriptions and boxes of its most visible objects (region-text alignment) and, on crop rows,
the square crop around the main object. The words come from `captions` and `object_text`.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tvad_jax.data.captions import clip_caption, clip_questions, clip_timelines
from tvad_jax.data.dialogues import turn_tokens
from tvad_jax.data.object_boxes import box_coverage, box_velocity, crop_box, crop_frames
from tvad_jax.data.object_text import (ATTRIBUTE_PHRASES, clip_objects, scene_of, zone_question,
                                       zone_statement)
from tvad_jax.data.pipeline import LoaderConfig, clip_index, open_split, split_names
from tvad_jax.data.readers import UBnormalReader

DESCRIBE = "Describe the clip."


@dataclasses.dataclass
class ClipTexts:
    """Token arrays aligned with a split's clip index (row r = clip r); K = `regions`."""

    captions: list[str]
    caption_ids: np.ndarray      # [C, Lc] int32, <s> caption </s> <pad>...
    qa_ids: np.ndarray           # [C, Lq] int32, <s> question answer </s> <pad>...
    qa_targets: np.ndarray       # [C, Lq] int32, next token where it is an answer token, else -1
    region_ids: np.ndarray       # [C, K, Lc] int32, the description of each region's object
    region_boxes: np.ndarray     # [C, K, T, 4] float32 boxes per clip frame, NaN where absent
    region_attributes: np.ndarray  # [C, K, A] int32 phrase index per attribute, -1: none
    crop_boxes: np.ndarray       # [C, 4] float32 square crop (x0, y0, side, side), or -1


class ClipText(NamedTuple):
    caption: str     # the most visible object's description + a zone statement (contrastive)
    scene: str       # up to three targets (the answer to "Describe the clip.")
    question: str    # this clip's QA pair; pairs rotate over clips
    answer: str
    regions: tuple[str, ...]          # descriptions of the K most visible objects
    boxes: np.ndarray                 # [K, T, 4] their boxes (NaN: absent or no object)
    attributes: np.ndarray            # [K, A] their attribute phrase ids (-1: none)
    crop: np.ndarray | None           # crop rows: (x0, y0, side, side) around the main object


def clip_texts(prepared_dir: str | Path, reader: UBnormalReader, split: str,
               loader: LoaderConfig, regions: int, crop_every: int) -> list[ClipText]:
    """The texts of every clip of a prepared split of the synthetic benchmark (its sidecars,
    read by `reader`), in clip-index order; `regions` objects per clip.

    Every `crop_every`-th clip (0: none) becomes a crop sample: the frames are cropped around
    its main object (the box over the clip, expanded by half its size on each side) and its
    texts are that object's description and single-object QA."""
    _, lengths = open_split(prepared_dir, split)
    names = split_names(prepared_dir, split)
    sidecars, scenes, out = {}, {}, []
    span = (loader.clip_len - 1) * loader.frame_step + 1
    for row, (video, start) in enumerate(clip_index(lengths, loader)):
        name = names[video]
        sidecar = sidecars.setdefault(name, reader.read_sidecar(name))
        scene = scenes.setdefault(name, scene_of(sidecar))
        frame_ids = np.minimum(start + np.arange(loader.clip_len) * loader.frame_step,
                               sidecar["num_frames"] - 1)
        objects = clip_objects(sidecar, frame_ids, scene)
        timelines = clip_timelines(sidecar, int(start), span)
        width, height = sidecar["width"], sidecar["height"]
        crop = crop_every and row % crop_every == crop_every - 1 and objects
        if crop:
            main = objects[(row // crop_every) % min(len(objects), 2)]
            box = crop_box(main.boxes, width, height)
            question, answer = main.questions[(row // crop_every) % len(main.questions)]
            boxes = np.full((regions, loader.clip_len, 4), np.nan)
            boxes[0] = (main.boxes - np.tile(box[:2], 2)) * (width / box[2])
            attributes = np.full((regions, len(ATTRIBUTE_PHRASES)), -1)
            attributes[0] = main.attributes
            out.append(ClipText(main.description, main.description, question, answer,
                                (main.description,), boxes, attributes, box))
            continue
        scene_text = clip_caption(timelines, width, height)
        statement, _ = zone_statement(objects, row)
        main = objects[0].description if objects else "an empty street"
        pairs = [(DESCRIBE, scene_text[:1].upper() + scene_text[1:] + "."),
                 zone_question(objects, row // 2)] + clip_questions(timelines)
        boxes = np.full((regions, loader.clip_len, 4), np.nan)
        attributes = np.full((regions, len(ATTRIBUTE_PHRASES)), -1)
        for k, obj in enumerate(objects[:regions]):
            boxes[k], attributes[k] = obj.boxes, obj.attributes
        out.append(ClipText(f"{main}; {statement}", scene_text, *pairs[row % len(pairs)],
                            tuple(o.description for o in objects[:regions]), boxes,
                            attributes, None))
    return out


def encode_texts(texts: list[ClipText], tokenizer, caption_len: int, qa_len: int,
                 regions: int) -> ClipTexts:
    """Token arrays of `clip_texts` output (captions and descriptions padded to caption_len,
    QA pairs to qa_len)."""
    def caption(text):
        return encode_caption(tokenizer, text, caption_len)

    empty = np.full(caption_len, tokenizer.pad_token_id, np.int32)
    caption_ids, qa_ids, qa_targets, region_ids = [], [], [], []
    for text in texts:
        caption_ids.append(caption(text.caption))
        ids, targets = qa_sequence(tokenizer, text.question, text.answer, qa_len)
        qa_ids.append(ids)
        qa_targets.append(targets)
        described = [caption(r) for r in text.regions]
        region_ids.append(described + [empty] * (regions - len(described)))
    crops = [t.crop if t.crop is not None else np.full(4, -1) for t in texts]
    return ClipTexts([t.caption for t in texts], np.asarray(caption_ids, np.int32),
                     np.asarray(qa_ids, np.int32), np.asarray(qa_targets, np.int32),
                     np.asarray(region_ids, np.int32),
                     np.stack([t.boxes for t in texts]).astype(np.float32),
                     np.stack([t.attributes for t in texts]).astype(np.int32),
                     np.asarray(crops, np.float32))


def encode_caption(tokenizer, text: str, length: int) -> np.ndarray:
    """`<s> text </s>` padded (or cut) to `length` token ids."""
    return _pad([tokenizer.bos_token_id, *tokenizer(text)["input_ids"]], length, tokenizer,
                end=tokenizer.eos_token_id)


def qa_sequence(tokenizer, question: str, answer: str, length: int):
    """(ids, targets) of a dialogue turn (`<s> question answer </s>`, as the dialogue will ask)
    padded to `length`; targets[i] is ids[i+1] where that is an answer token (or the closing
    </s>), else -1."""
    prompt, reply = turn_tokens(tokenizer, question, answer)
    ids = (prompt + reply)[:length]
    targets = np.full(length, -1, np.int32)
    for i in range(len(prompt) - 1, len(ids) - 1):
        targets[i] = ids[i + 1]
    return _pad(ids, length, tokenizer), targets


def _pad(ids: list[int], length: int, tokenizer, end: int | None = None) -> np.ndarray:
    if end is not None:
        ids = ids[:length - 1] + [end]
    return np.asarray(ids + [tokenizer.pad_token_id] * (length - len(ids)), np.int32)


class AttachText:
    """grain transform: frames (cropped on crop rows) + this clip's text arrays, the per-patch
    coverage of its region boxes and their motion per tubelet (other keys dropped).

    `region_motion` [K, T', 2]: each region's centre velocity (dx, dy) in pixels per frame,
    0 where `region_motion_valid` [K, T'] is False (absent, or seen in one frame only)."""

    def __init__(self, texts: ClipTexts, index: np.ndarray, patch: int, tubelet: int):
        self.texts, self.patch, self.tubelet = texts, patch, tubelet
        self.rows = {(int(v), int(s)): r for r, (v, s) in enumerate(index)}

    def __call__(self, example: dict) -> dict:
        row = self.rows[(int(example["video_index"]), int(example["start"]))]
        frames, crop = example["frames"], self.texts.crop_boxes[row]
        if crop[0] >= 0:
            frames = crop_frames(frames, crop)
        coverage = box_coverage(self.texts.region_boxes[row], frames.shape[1], self.patch,
                                self.tubelet)
        motion = box_velocity(self.texts.region_boxes[row], self.tubelet)
        valid = ~np.isnan(motion[..., 0])
        return {"frames": frames, "caption_ids": self.texts.caption_ids[row],
                "qa_ids": self.texts.qa_ids[row], "qa_targets": self.texts.qa_targets[row],
                "region_ids": self.texts.region_ids[row], "region_weights": coverage,
                "region_attributes": self.texts.region_attributes[row],
                "region_motion": np.nan_to_num(motion), "region_motion_valid": valid}
