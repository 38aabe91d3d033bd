"""Inference with a trained T-VAD model: batched multi-turn dialogue (`dialogue`) and
detection on video files (`detect`)."""
