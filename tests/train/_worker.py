"""Runs the toy trainer under several meshes in one process (8 simulated CPU devices).

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python tests/train/_worker.py OUT_DIR

Writes OUT_DIR/result.json: per mesh, the run folder, the parameter and optimizer-state
shardings actually used, and the final trainable params (as .npz beside it).
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import jax
import numpy as np
from flax import traverse_util

from tvad_jax.train import toy
from tvad_jax.train.mesh import MeshConfig

MESHES = {
    "data4_tensor2": MeshConfig(data=4, fsdp=1, tensor=2),
    "data2_fsdp2_tensor2": MeshConfig(data=2, fsdp=2, tensor=2),
}


def main(out: Path) -> None:
    assert jax.device_count() == 8, jax.devices()
    result = {}
    for name, mesh_cfg in MESHES.items():
        base = toy.ToyConfig()
        cfg = dataclasses.replace(base, train=dataclasses.replace(base.train, mesh=mesh_cfg))
        run_dir = out / name
        res = toy.run(cfg, run_dir)
        kernel = res.state.params["hidden"]["kernel"]
        adam_mu = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(
            res.state.opt_state)[0] if "hidden" in jax.tree_util.keystr(path)
            and "kernel" in jax.tree_util.keystr(path) and "mu" in jax.tree_util.keystr(path)]
        flat = traverse_util.flatten_dict(jax.device_get(res.state.params), sep="/")
        np.savez(run_dir / "params.npz", **flat)
        result[name] = {
            "run_dir": str(run_dir),
            "mesh": dict(res.mesh.shape),
            "hidden_kernel_spec": [_spec(a) for a in kernel.sharding.spec],
            "hidden_kernel_shards": len({tuple((s.start, s.stop) for s in sh.index)
                                         for sh in kernel.addressable_shards}),
            "adam_mu_spec": [[_spec(a) for a in leaf.sharding.spec] for leaf in adam_mu],
            "frozen_spec": [_spec(a) for a in
                            res.frozen["project"]["kernel"].sharding.spec],
        }
    (out / "result.json").write_text(json.dumps(result, indent=2))


def _spec(axis):
    return list(axis) if isinstance(axis, tuple) else axis


if __name__ == "__main__":
    main(Path(sys.argv[1]))
