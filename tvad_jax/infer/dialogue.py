"""Batched multi-turn dialogue about B videos with one KV cache (paper 000 §4.2's flow:
judgment -> target appearance -> trajectory -> time).

    chat = Dialogue(model, visual, maps)             # prompts of B videos, nothing run yet
    chat.ask("Is there any anomaly in this video?")  # -> B answers; the cache keeps them
    chat.ask("What does the anomalous target look like?")

The first `ask` prefills [P_V, (<anomaly_start> P_An ... <anomaly_end>), <s> question] and
decodes; every later turn appends only `<s> question` to the cache, which already holds all
earlier prompts, questions and generated answers (up to each row's `</s>`): no recomputation.
That is the plain format; a backbone whose tokenizer has a chat template speaks the template's
(`data.dialogues.chat_format`: its system prefix before P_V, its turn openings and closings
around each question, its end token ending each answer). Questions are right-padded to
`question_len` tokens so that every later turn reuses one compiled program.

`maps` are the RAE's input on the decoder's view (`infer.heatmaps.with_decoder_view_maps`).
One-shot (Table 3's protocol): `example=(visual, maps, turns)` puts one annotated video and
its whole reference dialogue before each test video.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from tvad_jax.config import ConfigError
from tvad_jax.data.dialogues import chat_format, dialogue_arrays, question_length, turn_tokens
from tvad_jax.data.files import text_lines
from tvad_jax.errors import DataError
from tvad_jax.models.configs import DecoderConfig
from tvad_jax.models.decoder import Decoder, init_cache
from tvad_jax.models.family import family
from tvad_jax.models.generate import generate
from tvad_jax.models.tvad import decoder_inputs, prompt_positions

QUESTION_LEN = 24       # tokens per question turn (right-padded: one compiled program)


class Dialogue:
    """One conversation per row of `visual` [B, S_v, D] (and the RAE's input `maps`
    [B, T', h, w, 2] where the model uses anomaly prompts)."""

    def __init__(self, model, visual: np.ndarray, maps: np.ndarray | None = None,
                 example: tuple | None = None, max_turns: int = 4, max_new_tokens: int = 48,
                 question_len: int = QUESTION_LEN, example_len: int = 160, seed: int = 0):
        self.model = model
        self.tokenizer = model.backbone.tokenizer
        bcfg = model.backbone.cfg
        self.dec_cfg = bcfg.decoder
        self.dec = family(bcfg).decoder(bcfg)
        self.decoder = model.backbone.params["decoder"]
        self.max_new_tokens, self.question_len = max_new_tokens, question_len
        self.max_turns = max_turns
        self.rng = jax.random.key(seed)
        B = len(visual)
        fmt = chat_format(self.tokenizer)
        # after a one-shot example the test video comes in a later user turn
        prefix, positions, delta = self._prompt(
            visual, maps, prefix=fmt.prefix if example is None else fmt.video_opening)
        if example is not None:
            e_visual, e_maps, turns = example
            ids, _, _, n, _ = dialogue_arrays(self.tokenizer, turns, example_len)
            e_ids = jnp.asarray(np.broadcast_to(ids[:n], (B, n)))
            e_prompt, e_positions, e_delta = self._prompt(
                np.broadcast_to(e_visual, (B,) + e_visual.shape),
                None if e_maps is None else np.broadcast_to(e_maps, (B,) + e_maps.shape),
                e_ids, fmt.prefix)
            prefix = jnp.concatenate([e_prompt, prefix], axis=1)
            # the test video's prompt continues where the example's positions end
            positions = np.concatenate(
                [e_positions, positions + e_prompt.shape[1] + e_delta], axis=-1)
            delta += e_delta
        self.prefix = prefix                                               # B, S_p, D
        self.positions, self.delta = positions, delta       # [A, 1, S_p] or [1, S_p]; int
        capacity = prefix.shape[1] + max_turns * (question_len + max_new_tokens)
        self.cache = init_cache(self.dec_cfg, B, capacity)
        self.turns = 0
        self.last_tokens: np.ndarray | None = None      # [B, max_new_tokens] of the last turn

    def _prompt(self, visual, maps, text_ids=None, prefix=()
                ) -> tuple[jax.Array, np.ndarray, int]:
        """(embeddings [B, S, D], decoder positions, delta) of one video's prompt after the
        `prefix` ids."""
        cfg, params = self.model.cfg, self.model.params
        if cfg.anomaly_prompts:
            if maps is None:
                raise ValueError("this model's decoder reads anomaly prompts: pass their maps")
            maps = jnp.asarray(maps)
        if text_ids is None:
            text_ids = jnp.zeros((len(visual), 0), jnp.int32)
        bcfg = self.model.backbone.cfg
        embeds, _ = decoder_inputs(cfg, bcfg, self.decoder, params.get("rae"),
                                   params.get("special"), jnp.asarray(visual), maps, text_ids,
                                   prefix)
        positions, delta = prompt_positions(bcfg, visual.shape[1], embeds.shape[1],
                                            len(prefix))
        return embeds, positions, delta

    def ask(self, question: str, temperature: float = 0.0) -> list[str]:
        """Ask every video the same question; returns the B decoded answers."""
        if self.turns >= self.max_turns:   # the cache was sized for max_turns
            raise ValueError(f"this dialogue holds {self.max_turns} turns; start a new one")
        prompt, _ = turn_tokens(self.tokenizer, question, None, first=self.turns == 0)
        if len(prompt) > self.question_len:
            raise ValueError(f"question of {len(prompt)} tokens > question_len "
                             f"{self.question_len}: {question!r}")
        B = self.prefix.shape[0]
        ids = np.full((B, self.question_len), self.dec_cfg.pad_token_id, np.int32)
        ids[:, :len(prompt)] = prompt
        words = self.dec.apply({"params": self.decoder}, jnp.asarray(ids), method=Decoder.embed)
        lengths = np.full(B, len(prompt), np.int32)
        positions = None
        if self.turns == 0:
            words = jnp.concatenate([self.prefix, words], axis=1)
            lengths = lengths + self.prefix.shape[1]
            start = self.prefix.shape[1] + self.delta
            question = np.arange(start, start + self.question_len, dtype=np.int32)
            positions = np.concatenate([self.positions, np.broadcast_to(
                question, self.positions.shape[:-1] + question.shape)], axis=-1)
        tokens, self.cache = generate(self.decoder, self.dec_cfg, words, jnp.asarray(lengths),
                                      self.max_new_tokens,
                                      jax.random.fold_in(self.rng, self.turns), self.cache,
                                      temperature, decoder=self.dec, positions=positions,
                                      delta=self.delta)
        self.turns += 1
        self.last_tokens = np.asarray(tokens)
        return [self._decode(row) for row in self.last_tokens]

    def _decode(self, tokens: Sequence[int]) -> str:
        ids = [int(t) for t in tokens]
        if self.dec_cfg.eos_token_id in ids:
            ids = ids[:ids.index(self.dec_cfg.eos_token_id)]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()


def check_answer_budget(dec_cfg: DecoderConfig, max_new_tokens: int,
                        question_len: int = QUESTION_LEN) -> None:
    """ConfigError, naming the limit, when one question and its answer alone overflow the
    decoder's context (`max_length`): refused at once instead of generating for minutes."""
    room = dec_cfg.max_length - question_len
    if max_new_tokens > room:
        raise ConfigError(f"max_new_tokens {max_new_tokens}: a {question_len}-token question and "
                          f"its answer must fit the decoder's context of {dec_cfg.max_length} "
                          f"tokens (at most {room} new tokens)")


def read_questions(path: Path, tokenizer, max_turns: int, question_len: int = QUESTION_LEN
                   ) -> list[str]:
    """The questions of a text file (one per non-blank line), checked before any turn runs:
    UTF-8 text, at most `max_turns` of them, each within `question_len` tokens."""
    lines = text_lines(path)
    if len(lines) > max_turns:
        raise DataError(path, f"{len(lines)} questions, more than the {max_turns} turns "
                              "the dialogue holds (--max-turns)")
    for number, question in lines:
        problem = question_problem(tokenizer, question, question_len)
        if problem:
            raise DataError(path, f"line {number}: {problem}")
    return [question for _, question in lines]


def question_problem(tokenizer, question: str, question_len: int = QUESTION_LEN) -> str | None:
    """Why `question` cannot be one dialogue turn (too many tokens), or None."""
    length = question_length(tokenizer, question)
    if length > question_len:
        return f"a question of {length} tokens; at most {question_len} fit a turn"
    return None


YES_WORDS = frozenset({"yes", "yeah", "yep", "true"})
NO_WORDS = frozenset({"no", "nope", "false"})


def normalize_yes_no(text: str) -> str | None:
    """'yes', 'no', or None: the first yes/no word of the answer (case and punctuation ignored)."""
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in YES_WORDS:
            return "yes"
        if word in NO_WORDS:
            return "no"
    return None
