"""Pretraining texts per clip: QA token targets, crop rows, region weights attached."""
import numpy as np
import pytest

from tvad_jax.data.clip_texts import AttachText, clip_texts, encode_texts, qa_sequence
from tvad_jax.data.pipeline import LoaderConfig, clip_index, make_dataset, open_split
from tvad_jax.data.readers import make_reader
from tvad_jax.models.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["How many cars are there?", "Two.", "A red car moves left.", "Describe the clip."]
    return train_tokenizer(texts * 5, vocab_size=300)


def test_qa_sequence_targets_only_the_answer(tokenizer):
    ids, targets = qa_sequence(tokenizer, "How many cars are there?", "Two.", 16)
    question = tokenizer("How many cars are there?")["input_ids"]
    answer = tokenizer(" Two.")["input_ids"]
    expected = [tokenizer.bos_token_id, *question, *answer, tokenizer.eos_token_id]
    assert ids.tolist() == expected + [tokenizer.pad_token_id] * (16 - len(expected))
    start = len(question)                     # the last question token predicts the answer
    assert targets[:start].tolist() == [-1] * start
    assert targets[start:start + len(answer) + 1].tolist() == [*answer,
                                                               tokenizer.eos_token_id]
    assert (targets[start + len(answer) + 1:] == -1).all()


def test_clip_rows_crops_and_region_weights(tiny_prepared):
    cfg, prepared = tiny_prepared
    loader = LoaderConfig(clip_len=8, clip_stride=8, batch_size=2, shuffle=False,
                          num_epochs=1, drop_remainder=False)
    reader = make_reader(cfg.prepare.layout, cfg.prepare_source)
    texts = clip_texts(prepared, reader, "train", loader, regions=3, crop_every=2)
    source, lengths = open_split(prepared, "train")
    index = clip_index(lengths, loader)
    assert len(texts) == len(index)
    crops = [t for t in texts if t.crop is not None]
    assert crops and all(t.crop is None for t in texts[0::2])      # every 2nd clip is a crop
    for text in texts:
        assert not {"normal", "abnormal", "anomaly"} & set(text.caption.replace(";", " ").split())
        assert text.boxes.shape == (3, 8, 4)
        if text.crop is not None:   # a crop holds its main object, described alone
            assert text.regions == (text.caption,) and text.crop[2] == text.crop[3]
    tokenizer = train_tokenizer([s for t in texts for s in (*t[:4], *t[4])], vocab_size=300)
    arrays = encode_texts(texts, tokenizer, caption_len=32, qa_len=32, regions=3)
    attach = AttachText(arrays, index, patch=8, tubelet=2)
    batch = next(iter(make_dataset(source, lengths, loader, transform=attach)))
    assert batch["frames"].shape == (2, 8, 48, 48, 3)
    weights = batch["region_weights"]                              # [B, K, T', g, g]
    assert weights.shape == (2, 3, 4, 6, 6)
    assert ((weights >= 0) & (weights <= 1)).all()
    for row, ids in zip(weights, batch["region_ids"]):   # a described object covers patches
        described = (ids != tokenizer.pad_token_id).any(axis=-1)
        np.testing.assert_array_equal(row.reshape(3, -1).sum(-1) > 0, described)
    motion, moving = batch["region_motion"], batch["region_motion_valid"]   # [B, K, T', 2]
    assert motion.shape == (2, 3, 4, 2) and moving.shape == (2, 3, 4)
    assert (motion[~moving] == 0).all()
    plain = next(iter(make_dataset(source, lengths, loader)))      # the same clips, untouched
    rows = [index.tolist().index([v, s]) for v, s in zip(plain["video_index"], plain["start"])]
    for i, row in enumerate(rows):    # each region's velocity: its boxes' centre steps
        centre = (texts[row].boxes[..., :2] + texts[row].boxes[..., 2:]) / 2
        seen = ~np.isnan(centre[:, :3, 0]).any(axis=1)               # in frames 0-2
        step = np.diff(centre[seen, :3], axis=1)                      # frame 0: its step,
        expected = (step[:, 0] + step.mean(axis=1)) / 2           # frame 1: mean of two
        np.testing.assert_allclose(motion[i, seen, 0], expected, rtol=1e-5, atol=1e-6)
