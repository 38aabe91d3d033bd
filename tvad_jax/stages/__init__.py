"""Trainable stages run as jobs on a benchmark: data -> engine -> run folder -> evaluation.

  s3m.py   VLAVAD's S3M on per-object track sequences (`tvad train s3m`, `tvad eval run`)

Each stage module holds its job config section, its data pipeline, its `train_*` entry point
(through `tvad_jax.train.loop.train`) and the evaluation of a finished run. Importing this
package imports no stage.
"""
