import json

import pytest

from tvad_jax.data.pipeline import find_builder_dir
from tvad_jax.models.convert import CheckpointError
from tvad_jax.models.tokenizer import (ANOMALY_TOKENS, SPECIAL_TOKENS, VIDEO_TOKEN,
                                       annotation_texts, load_tokenizer, train_tokenizer)


@pytest.fixture(scope="module")
def texts(tiny_prepared):
    _, prepared_dir = tiny_prepared
    files = sorted((find_builder_dir(prepared_dir) / "annotations").glob("*.jsonl"))
    return list(annotation_texts(files))


def test_round_trip_and_special_tokens(texts, tmp_path):
    tokenizer = train_tokenizer(texts, vocab_size=400)
    for text in texts[:200]:
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids) == text
    assert len(tokenizer("From frame 12 to frame 31.")["input_ids"]) < 12  # merges learned
    prompt = f"{VIDEO_TOKEN}{ANOMALY_TOKENS[0]}{ANOMALY_TOKENS[1]}{ANOMALY_TOKENS[2]} Is it?"
    ids = tokenizer(prompt)["input_ids"]
    special_ids = [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert len(set(special_ids)) == len(SPECIAL_TOKENS)
    assert ids[:4] == special_ids[4:8]
    assert tokenizer.pad_token == "<pad>" and tokenizer.eos_token == "</s>"
    tokenizer.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again(prompt)["input_ids"] == ids
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())


def test_training_is_deterministic(texts):
    a = train_tokenizer(texts, vocab_size=400)
    b = train_tokenizer(texts, vocab_size=400)
    assert a.get_vocab() == b.get_vocab()


def test_missing_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
