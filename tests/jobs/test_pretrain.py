import json

import pytest

from tvad_jax.cli import main
from tvad_jax.jobs.pretrain import qa_sequence
from tvad_jax.models.backbone_io import load_backbone
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


def test_pretrain_end_to_end_on_the_tiny_benchmark(tmp_path, capsys):
    args = ["pretrain", "--config", "tiny", f"synth.out_dir={tmp_path / 'synth'}",
            f"runs_dir={tmp_path / 'runs'}"]
    assert main(args) == 0
    run_dir = next((tmp_path / "runs").glob("pretrain-*"))
    metrics = json.loads((run_dir / "pretrain_metrics.json").read_text())
    retrieval = metrics["retrieval"]
    assert retrieval["clips"] == 8
    assert 0 <= retrieval["text_to_video_top1"] <= retrieval["text_to_video_top5"] <= 1
    assert all(sample["truth"] for sample in metrics["samples"])
    cfg, params, tokenizer = load_backbone(run_dir / "backbone")
    assert cfg.vision.image_size == 48 and cfg.decoder.vocab_size == len(tokenizer)
    assert tokenizer.convert_tokens_to_ids("<anomaly_sep>") != tokenizer.unk_token_id
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 6 and "train/contrastive" in json.loads(lines[0])
