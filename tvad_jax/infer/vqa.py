"""Single-object questions to the backbone's decoder, batched (paper 004's VQA stage).

    qa = CropQA(plain_model(backbone, ...), batch=64, max_new_tokens=16)
    visual, pooled = qa.encode(clips)                    # [K, S_v, D], [K, D_v]
    answers = qa.answers(visual, categories, "behaviour")   # [K] greedy answers

VLAVAD asks BLIP-2 three questions about every object crop; here the backbone's decoder
answers them about a crop clip (`data.object_crops.track_clips`), worded as pretraining taught
it (`data.object_text.QUESTIONS`): the object's own noun in the question ("What is the pose of
the car in the picture?"; the paper's pool names a person). Each question is one single-turn
`Dialogue` per batch of crops (the visual prefix, the question, greedy decoding with the KV
cache and early exit).
`pooled` is the tower's last layer averaged over tubelets and patches: the visual feature of
Table 2's kNN baseline.
"""
from __future__ import annotations

import numpy as np

from tvad_jax.data.dialogues import question_length
from tvad_jax.data.object_text import CLASSES, QUESTIONS, question
from tvad_jax.data.pipeline import CLIP_MEAN, CLIP_STD
from tvad_jax.infer.dialogue import QUESTION_LEN, Dialogue
from tvad_jax.infer.features import make_encoder
from tvad_jax.models.tvad import TVADModel


class CropQA:
    """A model without anomaly prompts (`models.tvad.plain_model`: the frozen backbone)
    answering questions about crop clips."""

    def __init__(self, model: TVADModel, batch: int, max_new_tokens: int):
        if model.cfg.anomaly_prompts:
            raise ValueError("crop questions go to the plain backbone (no anomaly prompts)")
        self.model, self.batch, self.max_new_tokens = model, batch, max_new_tokens
        self._encode = make_encoder(model.backbone.cfg, model.backbone.params)
        # one padded question length for every wording: one compiled decoding program
        self.question_len = max(QUESTION_LEN, *(
            question_length(model.backbone.tokenizer, question(kind, noun))
            for kind in QUESTIONS for noun in CLASSES))

    def encode(self, clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """clips [K, L, H, W, 3] uint8 -> (visual tokens [K, S_v, D] float16, pooled last
        tower layer [K, D_v] float32), in batches of `batch` (the last one padded)."""
        mean, std = np.asarray(CLIP_MEAN, np.float32), np.asarray(CLIP_STD, np.float32)
        visual, pooled = [], []
        for lo in range(0, len(clips), self.batch):
            chunk = clips[lo:lo + self.batch]
            n = len(chunk)
            x = (chunk.astype(np.float32) / 255.0 - mean) / std
            x = np.pad(x, ((0, self.batch - n),) + ((0, 0),) * 4)
            hidden, tokens = self._encode(x)        # [B, I, T', 1+N, D_v], [B, S_v, D]
            visual.append(np.asarray(tokens)[:n])
            pooled.append(np.asarray(hidden[:n, -1, :, 1:], np.float32).mean(axis=(1, 2)))
        if not visual:
            raise ValueError("no clips to encode")
        return np.concatenate(visual), np.concatenate(pooled)

    def answers(self, visual: np.ndarray, categories: list[str], prompt: str) -> list[str]:
        """The greedy answer of every crop [K] to `prompt`, worded with its category; crops of
        one category are asked together in batches of `batch`."""
        out = [""] * len(categories)
        for category in sorted(set(categories)):
            rows = [i for i, c in enumerate(categories) if c == category]
            text = question(prompt, category)
            for lo in range(0, len(rows), self.batch):
                chunk = rows[lo:lo + self.batch]
                tokens = visual[chunk].astype(np.float32)
                tokens = np.pad(tokens, ((0, self.batch - len(chunk)), (0, 0), (0, 0)))
                chat = Dialogue(self.model, tokens, None, max_turns=1,
                                max_new_tokens=self.max_new_tokens,
                                question_len=self.question_len)
                for i, answer in zip(chunk, chat.ask(text)):
                    out[i] = answer
        return out
