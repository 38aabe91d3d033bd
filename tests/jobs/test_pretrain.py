import json

from tvad_jax.cli import main
from tvad_jax.models.backbone_io import load_backbone


def test_pretrain_end_to_end_on_the_tiny_benchmark(tmp_path, capsys):
    args = ["pretrain", "--config", "tiny", f"synth.out_dir={tmp_path / 'synth'}",
            f"runs_dir={tmp_path / 'runs'}", "pretrain.attribute_weight=1"]
    assert main(args) == 0
    run_dir = next((tmp_path / "runs").glob("pretrain-*"))
    metrics = json.loads((run_dir / "pretrain_metrics.json").read_text())
    retrieval = metrics["retrieval"]
    assert retrieval["clips"] == 8
    assert 0 <= retrieval["text_to_video_top1"] <= retrieval["text_to_video_top5"] <= 1
    assert retrieval["regions"] >= retrieval["clips"]          # every held-out clip has one
    assert 0 <= retrieval["region_to_text_top1"] <= retrieval["region_to_text_top5"] <= 1
    assert all(sample["truth"] for sample in metrics["samples"])
    attributes = retrieval["region_attributes"]
    assert {"class", "speed", "zone"} <= set(attributes)
    assert all(0 <= a["accuracy"] <= 1 and 0 < a["majority"] <= 1 for a in attributes.values())
    cfg, params, tokenizer = load_backbone(run_dir / "backbone")
    assert cfg.vision.image_size == 48 and cfg.decoder.vocab_size == len(tokenizer)
    assert tokenizer.convert_tokens_to_ids("<anomaly_sep>") != tokenizer.unk_token_id
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 6
    assert {"train/contrastive", "train/region", "train/lm", "train/attribute",
            "train/attribute_top1"} <= set(json.loads(lines[0]))
