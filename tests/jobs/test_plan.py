"""`tvad plan`: AOT compilation on simulated devices, per-device memory and FLOPs.

The tiny plan config is compiled by the command in subprocesses with 8 simulated CPU devices,
once on a pure data-parallel mesh and once with the parameters sharded 4 ways (fsdp=4);
the per-device parameter bytes are checked against a count made here from the abstract
parameter shapes and their logical axis names alone.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from train_helpers import REPO, subprocess_env

from tvad_jax import config as config_lib
from tvad_jax.config import ConfigError
from tvad_jax.jobs import plan as plan_lib
from tvad_jax.train import plan as engine_plan

MESHES = {"dp8": "data=8,fsdp=1,tensor=1", "fsdp4": "data=2,fsdp=4,tensor=1"}
TOP_KEYS = {"config", "overrides", "mesh", "devices", "platform", "shapes", "plan", "stages"}
STAGE_KEYS = {"kind", "global_batch", "batch_shapes", "params", "global_bytes",
              "per_device_bytes", "flops_per_device", "flops_per_device_xla",
              "matmul_flops_per_device", "flops_total", "loops", "lower_s", "compile_s",
              "wall_s"}
BYTE_KEYS = {"trainable_params", "frozen_params", "optimizer_state", "batch", "arguments",
             "outputs", "aliased", "temp", "generated_code", "peak_estimate"}


def run_plan(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tvad_jax.commands.plan", *args],
                          env=subprocess_env(8), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def plans(tmp_path_factory) -> dict[str, tuple[dict, Path]]:
    """mesh name -> (stdout JSON, runs root) of `plan tiny --stage all`."""
    out = {}
    for name, mesh in MESHES.items():
        root = tmp_path_factory.mktemp(name)
        proc = run_plan("tiny", "--mesh", mesh, "--stage", "all", f"runs_dir={root}")
        assert proc.returncode == 0, proc.stderr[-4000:]
        out[name] = (json.loads(proc.stdout), root)
    return out


def expected_param_bytes(stage: str, fsdp: int) -> tuple[int, int]:
    """(trainable, frozen) bytes per device from the abstract params' global shapes: a leaf
    with an "embed" axis keeps 1/fsdp of it (LOGICAL_AXIS_RULES: embed -> fsdp), the rest is
    replicated (tensor = 1)."""
    pcfg = config_lib.resolve("tiny", kind="plan")
    spec = plan_lib.stage_spec(pcfg, stage)
    boxed = jax.eval_shape(spec.init_fn, jax.random.key(0))
    patterns = [re.compile(p) for p in spec.config.trainable]
    trainable = frozen = 0
    for path, (shape, dtype, names) in engine_plan.param_axes(boxed).items():
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if names and "embed" in names:
            dim = shape[names.index("embed")]
            assert dim % fsdp == 0, (path, shape)
            n //= fsdp
        if any(p.fullmatch(path) for p in patterns):
            trainable += n
        else:
            frozen += n
    return trainable, frozen


def test_json_has_the_documented_keys_and_a_run_folder(plans):
    result, root = plans["fsdp4"]
    assert TOP_KEYS <= set(result)
    assert result["devices"] == 8 and result["mesh"] == {"data": 2, "fsdp": 4, "tensor": 1}
    assert set(result["stages"]) == {"stage1", "stage2", "encoder"}
    for stage in result["stages"].values():
        assert STAGE_KEYS <= set(stage)
        assert set(stage["per_device_bytes"]) == BYTE_KEYS
        assert stage["global_batch"] == 8
    (run_dir,) = list(root.glob("plan-*"))
    assert json.loads((run_dir / "plan.json").read_text()) == result
    assert "FLOPs/dev" in (run_dir / "plan.txt").read_text()
    assert json.loads((run_dir / "config.json").read_text())["backbone"] == "tiny"


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_param_bytes_per_device_match_an_independent_count(plans, stage):
    for name, fsdp in (("dp8", 1), ("fsdp4", 4)):
        got = plans[name][0]["stages"][stage]["per_device_bytes"]
        trainable, frozen = expected_param_bytes(stage, fsdp)
        assert (got["trainable_params"], got["frozen_params"]) == (trainable, frozen), name
    # fsdp shrinks what each device holds; the replicated part stays
    full = plans["dp8"][0]["stages"][stage]["per_device_bytes"]
    sharded = plans["fsdp4"][0]["stages"][stage]["per_device_bytes"]
    params = lambda b: b["trainable_params"] + b["frozen_params"]  # noqa: E731
    assert params(sharded) < params(full)
    assert sharded["optimizer_state"] < full["optimizer_state"]


def test_stage2_decoder_is_mostly_sharded(plans):
    """The frozen decoder shards by its logical axes: at fsdp=4 each device holds close to a
    quarter of it (only norms' and other embed-less leaves stay whole)."""
    full = plans["dp8"][0]["stages"]["stage2"]["per_device_bytes"]["frozen_params"]
    sharded = plans["fsdp4"][0]["stages"]["stage2"]["per_device_bytes"]["frozen_params"]
    assert 0.25 <= sharded / full < 0.3


def test_memory_analysis_arguments_are_the_breakdown(plans):
    for result, _ in plans.values():
        for name, stage in result["stages"].items():
            b = stage["per_device_bytes"]
            parts = (b["trainable_params"] + b["frozen_params"] + b["optimizer_state"]
                     + b["batch"])
            if stage["kind"] == "train_step":  # + the step counter and the RNG key
                assert 0 <= b["arguments"] - parts <= 64, (name, b)
            else:  # jit drops the params the pass never reads (the ViT's post-LN, proj)
                assert b["batch"] < b["arguments"] <= parts, (name, b)
            assert b["temp"] > 0 and b["peak_estimate"] >= b["arguments"]
            if stage["kind"] == "train_step":  # the state is donated into the new state
                assert b["aliased"] > 0


def test_flops_positive_and_equal_across_meshes(plans):
    """Same global batch, same work: the matmul FLOPs summed over devices agree; all FLOPs
    agree loosely (with replicated params every device repeats the optimizer update, with
    fsdp each updates its shard)."""
    a, b = plans["dp8"][0]["stages"], plans["fsdp4"][0]["stages"]
    for stage in ("stage1", "stage2", "encoder"):
        fa, fb = a[stage]["flops_total"], b[stage]["flops_total"]
        assert fa > 0 and fb > 0
        assert fb == pytest.approx(fa, rel=0.1), stage
        assert a[stage]["flops_per_device"] == pytest.approx(fa / 8)
        ma, mb = a[stage]["matmul_flops_per_device"], b[stage]["matmul_flops_per_device"]
        assert ma > 0 and mb == pytest.approx(ma, rel=0.01), stage
    # the scanned decoder's loop is counted per layer, not once
    s2 = a["stage2"]
    assert s2["flops_per_device"] > s2["flops_per_device_xla"]
    assert [loop["trip_count"] for loop in s2["loops"]].count(2) >= 1


def test_bad_mesh_fails_with_one_clear_line():
    proc = run_plan("tiny", "--mesh", "data=two,fsdp=4", timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("tvad: error: --mesh") and "'two'" in lines[0]
    assert proc.stdout == ""


def test_llava7b_shapes_fill_the_paper_sequence():
    """16 frames -> 8 tubelets of 576 patches, 2 x 2-pooled to 144 tokens each; anomaly
    prompts of 7 steps x 14 + start/sep/end; text up to the 2048-token budget."""
    sh = plan_lib.shapes(config_lib.resolve("llava7b", kind="plan"))
    assert sh.hidden == (4, 8, 577, 1024)
    assert (sh.visual_tokens, sh.prompt_tokens, sh.text_len, sh.seq_len) == (1152, 106, 790,
                                                                             2048)
    sh = plan_lib.shapes(config_lib.resolve("llava7b", ["max_seq_len=1500"], kind="plan"))
    assert sh.seq_len == 1500 and sh.text_len == 1500 - 1152 - 106


def test_qwen25vl7b_shapes_count_the_chat_prefix_and_keep_a_frames_aspect():
    """336 px: 24 x 24 patches of 14 px, 144 merged tokens per tubelet, the video block's two
    ends, 14 ChatML ids before it; 252 x 448 (16:9 at the same pixel count): an 18 x 32 grid
    and the same 144 tokens; a LLaVA plan refuses a frame size; 28 must divide each side."""
    sh = plan_lib.shapes(config_lib.resolve("qwen25vl7b", kind="plan"))
    assert sh.hidden == (4, 8, 1 + 24 * 24, 1280) and sh.maps == (8, 24, 24, 2)
    assert (sh.prefix_len, sh.visual_tokens, sh.prompt_tokens) == (14, 1152, 106)
    assert sh.seq_len == 2048 and sh.text_len == 2048 - 14 - (1152 + 2) - 106
    sh = plan_lib.shapes(config_lib.resolve("qwen25vl7b", ["frame_size=252,448"],
                                            kind="plan"))
    assert sh.hidden == (4, 8, 1 + 18 * 32, 1280) and sh.maps == (8, 18, 32, 2)
    assert sh.visual_tokens == 1152
    with pytest.raises(ConfigError, match="frame_size is Qwen2.5-VL's"):
        plan_lib.shapes(config_lib.resolve("llava7b", ["frame_size=252,448"], kind="plan"))
    with pytest.raises(ConfigError, match="frame_size: image_size \\(250, 448\\) is not a "):
        plan_lib.shapes(config_lib.resolve("qwen25vl7b", ["frame_size=250,448"], kind="plan"))
