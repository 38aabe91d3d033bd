"""The training engine shared by every stage.

  mesh.py         device mesh (data, fsdp, tensor) and the logical-axis rules table
  optim.py        AdamW + warmup-cosine-to-floor + clipping + accumulation (OptimConfig)
  state.py        TrainState, trainable/frozen split, optimizer-state shardings
  step.py         the pure train step and its jitted, sharded, donating form
  loop.py         `build` (sharded init) and `train` (resume, loop, checkpoints, logs)
  checkpoint.py   orbax checkpoints of train state + data-iterator state (the only orbax import)
  writers.py      asynchronous JSONL + TensorBoard event writer
  distributed.py  `jax.distributed.initialize` from config or environment
  toy.py          a toy regression task for tests, benchmarks and smoke runs
"""
