"""`tvad plan`'s arguments: `--mesh`, `--stage` and `--devices` parsing, and bad arguments or
plan configs failing in one line before anything compiles or a run folder is written.
(Planning itself is tested in tests/jobs/test_plan.py.)"""
from __future__ import annotations

import pytest

from tvad_jax.commands import plan as plan_commands
from tvad_jax.commands.plan import device_count, parse_mesh, parse_stages
from tvad_jax.config import ConfigError
from tvad_jax.train.mesh import MeshConfig


def test_help_names_the_arguments(tvad_help):
    text = tvad_help("plan")
    for name in ("--mesh", "--devices", "--stage", "key=value", "llava7b", "shipped", "tiny"):
        assert name in text


@pytest.mark.parametrize("text, mesh", [
    ("data=2,fsdp=4,tensor=1", MeshConfig(data=2, fsdp=4, tensor=1)),
    (" data = 2 , fsdp=4 ", MeshConfig(data=2, fsdp=4, tensor=1)),
    ("fsdp=-1", MeshConfig(data=1, fsdp=-1, tensor=1)),      # -1 takes the rest, data is 1
    ("tensor=2", MeshConfig(data=-1, fsdp=1, tensor=2)),     # no -1: data takes the rest
    ("data=-1,tensor=2,", MeshConfig(data=-1, fsdp=1, tensor=2)),
])
def test_parse_mesh(text, mesh):
    assert parse_mesh(text) == mesh


@pytest.mark.parametrize("text, fragment", [
    ("data=two,fsdp=4", "size 'two' of 'data' is not an integer"),
    ("depth=2", "'depth=2' is not AXIS=SIZE with AXIS one of data, fsdp, tensor"),
    ("data2", "'data2' is not AXIS=SIZE"),
    ("data=2,data=4", "axis 'data' given twice"),
    ("fsdp=0", "size of 'fsdp' must be positive or -1"),
    ("fsdp=-2", "size of 'fsdp' must be positive or -1"),
    ("", "no axis given"),
    (" , ", "no axis given"),
])
def test_parse_mesh_rejects(text, fragment):
    with pytest.raises(ConfigError) as err:
        parse_mesh(text)
    assert str(err.value).startswith(f"--mesh {text!r}")
    assert fragment in str(err.value)


@pytest.mark.parametrize("text, stages", [
    ("all", ("stage1", "stage2", "encoder")),
    (" all ", ("stage1", "stage2", "encoder")),
    ("1", ("stage1",)),
    ("encoder,2", ("encoder", "stage2")),              # in the order given
    ("2,stage2,1,2", ("stage2", "stage1")),            # each once
])
def test_parse_stages(text, stages):
    assert parse_stages(text) == stages


@pytest.mark.parametrize("text, fragment", [
    ("3", "'3' is not one of 1, 2, encoder, all"),
    ("1,all", "'all' is not one of"),
    ("", "no stage given"),
    (",", "no stage given"),
])
def test_parse_stages_rejects(text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_stages(text)


@pytest.mark.parametrize("mesh, devices, expected", [
    (MeshConfig(data=1, fsdp=-1, tensor=1), None, 8),   # an axis of -1: 8 by default
    (MeshConfig(data=2, fsdp=4, tensor=1), None, 8),    # else the mesh's product
    (MeshConfig(data=1, fsdp=3, tensor=1), None, 3),
    (MeshConfig(data=1, fsdp=-1, tensor=2), 6, 6),
])
def test_device_count(mesh, devices, expected):
    assert device_count(mesh, devices) == expected


@pytest.mark.parametrize("mesh, devices, fragment", [
    (MeshConfig(data=1, fsdp=-1, tensor=1), 0, "--devices must be >= 1, got 0"),
    (MeshConfig(data=2, fsdp=4, tensor=1), 4, "--mesh: mesh"),
    (MeshConfig(data=1, fsdp=-1, tensor=3), 8, "--mesh: 8 devices cannot be split"),
    (MeshConfig(data=-1, fsdp=-1, tensor=1), 8, "--mesh: at most one mesh axis may be -1"),
])
def test_device_count_rejects(mesh, devices, fragment):
    with pytest.raises(ConfigError, match=fragment):
        device_count(mesh, devices)


@pytest.mark.parametrize("args, fragments", [
    (["tiny", "--mesh", "data=x"], ("--mesh 'data=x'", "'x'")),
    (["tiny", "--mesh", "data=2,fsdp=-1,tensor=-1"], ("at most one mesh axis may be -1",)),
    (["tiny", "--mesh", "data=3", "--devices", "8"], ("--mesh:", "needs 3 devices, have 8")),
    (["tiny", "--devices", "0"], ("--devices must be >= 1",)),
    (["tiny", "--stage", "stage3"], ("--stage 'stage3'", "'stage3' is not one of")),
    (["default"], ("unknown plan config 'default'", "known: llava7b, qwen25vl7b, shipped, tiny")),
    (["tiny", "batch_per_device=two"], ("'batch_per_device'", "cannot parse 'two' as int")),
    (["tiny", "phase=C"], ("'phase'", "'C' is not one of ['A', 'B']")),
    (["tiny", "stage=1"], ("unknown config key 'stage'", "batch_per_device")),
    (["tiny", "max_seq_len=4", "text_len=0"], ("max_seq_len=4 leaves no text",)),
])
def test_bad_arguments_fail_in_one_line_without_a_run_folder(tvad, runs_dir, args, fragments):
    result = tvad("plan", *args, f"runs_dir={runs_dir}")
    result.failed_with(*fragments)
    assert list(runs_dir.rglob("*")) == []


def test_overrides_may_follow_the_options(tvad, runs_dir):
    """`plan CONFIG --mesh M --stage S key=value`: the trailing override is read as an
    override (here a bad one, so nothing compiles), not as an unrecognized argument."""
    result = tvad("plan", "tiny", "--mesh", "data=1", "--stage", "1", f"runs_dir={runs_dir}",
                  "--devices", "1", "remat=perhaps")
    result.failed_with("config key 'remat': cannot parse 'perhaps' as bool")
    assert list(runs_dir.rglob("*")) == []


def test_module_entry_point_reports_errors_in_one_line(runs_dir, capsys):
    """`python -m tvad_jax.commands.plan` (what a re-run in a fresh process executes) fails
    like `tvad plan`: exit 2 and one line."""
    assert plan_commands.main(["nope", f"runs_dir={runs_dir}"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip().splitlines() == [
        "tvad: error: unknown plan config 'nope'; known: llava7b, qwen25vl7b, shipped, tiny"]
    assert list(runs_dir.rglob("*")) == []
