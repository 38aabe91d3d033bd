"""Engine runs in subprocesses: 8 simulated devices, 2 processes over gloo, kill -9 and resume.

Every run trains the same toy config (20 steps, global batch 32, dropout on) and is compared
with one uninterrupted single-device run (`reference_run`).
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import portpicker
from processes import kill_when, run_together
from train_helpers import (REPO, WORKER, load_params, run_toy, subprocess_env, toy_command,
                           train_lines)


def _losses(run_dir):
    lines = train_lines(run_dir)
    assert [d["step"] for d in lines] == list(range(1, 21))
    return np.array([d["train/loss"] for d in lines])


def test_sharded_runs_match_single_device(reference_run, tmp_path):
    """data=4 x tensor=2 and data=2 x fsdp=2 x tensor=2 on 8 CPU devices follow the 1-device
    loss curve and end at the same params; params and Adam moments are really sharded."""
    proc = subprocess.run([sys.executable, str(WORKER), str(tmp_path)], cwd=REPO,
                          env=subprocess_env(8), capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((tmp_path / "result.json").read_text())
    ref_losses = _losses(reference_run)
    ref_params = load_params(reference_run / "params.npz")
    assert ref_losses[-1] < 0.8 * ref_losses[0]  # it does learn
    for name, res in result.items():
        run_dir = tmp_path / name
        np.testing.assert_allclose(_losses(run_dir), ref_losses, rtol=1e-5, err_msg=name)
        params = load_params(run_dir / "params.npz")
        for key, value in ref_params.items():
            np.testing.assert_allclose(params[key], value, atol=1e-6, err_msg=f"{name} {key}")
        # hidden/kernel is ("embed", "mlp") -> ("fsdp", "tensor") by the logical rules.
        assert res["hidden_kernel_spec"] == ["fsdp", "tensor"]
        assert res["adam_mu_spec"] == [["fsdp", "tensor"]]
        assert res["hidden_kernel_shards"] == res["mesh"]["fsdp"] * res["mesh"]["tensor"]
        assert res["frozen_spec"] == ["fsdp", None]


def test_two_processes_match_one_process(reference_run, tmp_path):
    """2 processes x 2 CPU devices (mesh data=2 over processes, tensor=2 inside each), each
    loading half of every global batch, reproduce the single-process loss trajectory."""
    port = portpicker.pick_unused_port()
    run_dir = tmp_path / "run"
    commands = [(toy_command(run_dir, "--params-out", str(tmp_path / "params.npz"),
                             "train.mesh.data=2", "train.mesh.tensor=2",
                             f"train.distributed.coordinator_address=127.0.0.1:{port}",
                             "train.distributed.num_processes=2",
                             f"train.distributed.process_id={pid}"), subprocess_env(2))
                for pid in range(2)]
    run_together(commands, REPO, timeout=150)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["devices"] == 4
    assert summary["mesh"] == {"data": 2, "fsdp": 1, "tensor": 2}
    np.testing.assert_allclose(_losses(run_dir), _losses(reference_run), rtol=1e-5)
    params, ref = load_params(tmp_path / "params.npz"), load_params(reference_run / "params.npz")
    for key in ref:
        np.testing.assert_allclose(params[key], ref[key], atol=1e-6, err_msg=key)
    # Each process saved its own data-iterator state beside the shared train state.
    data_dir = run_dir / "checkpoints" / "20" / "data"
    assert sorted(p.name for p in data_dir.glob("process_*.json")) == [
        "process_0-of-2.json", "process_1-of-2.json"]


def test_kill9_then_resume_is_bit_identical(reference_run, tmp_path):
    """SIGKILL at step 12 (checkpoints at 5, 10), then resume: the final params, every logged
    loss and the metrics file equal the uninterrupted run's exactly."""
    run_dir = tmp_path / "run"
    params_out = str(tmp_path / "params.npz")
    proc = subprocess.Popen(toy_command(run_dir, "--params-out", params_out,
                                        "--pause-at-step", "12"),
                            env=subprocess_env(1), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    kill_when(proc, (run_dir / "paused-0").exists, "step 12", timeout=120, poll=0.1)
    assert not (run_dir / "summary.json").exists()

    summary = run_toy(run_dir, "--params-out", params_out)
    assert summary["resumed_from_step"] == 10
    assert summary["final_step"] == 20
    params, ref = load_params(tmp_path / "params.npz"), load_params(reference_run / "params.npz")
    assert params.keys() == ref.keys()
    for key in ref:
        assert np.array_equal(params[key], ref[key]), key
    np.testing.assert_array_equal(_losses(run_dir), _losses(reference_run))
