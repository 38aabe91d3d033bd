"""Tokenizers: Hugging Face tokenizers from checkpoint directories, and the shipped default's
byte-level BPE trained on the synthetic benchmark's text annotations.

The default vocabulary carries the special tokens every stage relies on:

* `<pad>`, `<s>`, `</s>`, `<unk>`: padding, dialogue-turn start and end;
* `<video>`: the placeholder where the projected visual tokens P_V are spliced in;
* `<anomaly_start>`, `<anomaly_sep>`, `<anomaly_end>`: the three prompt tokens stage 2 adds
  around the RAE's anomaly prompts P_An (start, between time steps, end); their embeddings are
  trained in stage 2 (paper 000 §4.1).

Byte-level BPE decodes back to exactly the input text, which BLEU on generated answers needs.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from tvad_jax.models.convert import CheckpointError

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
VIDEO_TOKEN = "<video>"
ANOMALY_TOKENS = ("<anomaly_start>", "<anomaly_sep>", "<anomaly_end>")
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, VIDEO_TOKEN, *ANOMALY_TOKENS)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer learned from `texts` (deterministic for the same texts)."""
    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=PAD, bos_token=BOS, eos_token=EOS,
        unk_token=UNK, additional_special_tokens=[VIDEO_TOKEN, *ANOMALY_TOKENS])


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerFast:
    """The tokenizer saved in a checkpoint directory (`tokenizer.json` + config files)."""
    directory = Path(directory)
    if not (directory / "tokenizer.json").is_file():
        raise CheckpointError(f"{directory}: no tokenizer.json (expected a Hugging Face "
                              "tokenizer saved with the checkpoint)")
    return PreTrainedTokenizerFast.from_pretrained(str(directory))


def annotation_texts(jsonl_paths: Iterable[str | Path]) -> Iterator[str]:
    """Every question and reference answer of `tvad data prepare`'s annotation files."""
    for path in jsonl_paths:
        for line in Path(path).read_text().splitlines():
            video = json.loads(line)
            for turn in video["narratives"] + video["dialogue"]:
                yield turn["question"]
                yield from turn["answers"]
