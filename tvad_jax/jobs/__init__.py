"""Trainable stages run as jobs on a benchmark: data -> engine -> run folder -> evaluation.

  pretrain.py    the shipped default backbone (`tvad pretrain`)
  s3m.py         VLAVAD's S3M on per-object track sequences (`tvad train s3m`, `tvad eval run`)
  features.py    the on-disk cache of the frozen vision tower's clip features
  tvad.py        T-VAD stage 1 (AHD) and stage 2 (RAE + LoRA), the exported model
  tvad_data.py   T-VAD data: cache streams, dialogue token arrays, clips -> frames
  tvad_eval.py   T-VAD evaluation: heatmap metrics, the dialogue and its text metrics

Each stage module holds its job config section, its data pipeline, its `train_*` entry point
(through `tvad_jax.train.loop.train`) and the evaluation of a finished run. Importing this
package imports no stage.
"""
