"""`tvad plan`: compile a stage's step ahead of time on simulated devices and print what one
device needs (parameters, optimizer state, activations) and its FLOPs per step.

    tvad plan CONFIG [--mesh data=2,fsdp=4,tensor=1] [--devices N]
                     [--stage 1|2|encoder|all] [key=value ...]

CONFIG is a plan config (`llava7b`: LLaVA-1.5-7B at the paper's scale; `qwen25vl7b`: the
paper's Qwen2.5-VL-7B at 336 px, `frame_size=252,448` for 16:9 frames, with the Instruct
model's 14-id chat prefix; `shipped`: the shipped default backbone's shapes; `tiny`: for
tests); overrides set its fields, e.g. `batch_per_device=2 phase=B remat=false
job.stage1.train.optim.accumulation_steps=4`.
--mesh gives the axis sizes (one may be -1 = the rest; unnamed axes are 1, or data=-1 when
no axis is -1); --devices the simulated device count (default: the mesh's
product, or 8 when an axis is -1). Stages: 1 (AHD), 2 (RAE + LoRA, phase `phase`), encoder
(the feature-cache pass, forward only), all, or a comma list.

Nothing is allocated: the steps are lowered on `jax.ShapeDtypeStruct`s and compiled for N
CPU devices (the CPU device count is fixed when JAX starts its backend; a process whose
backend already runs with another count re-runs the command in a fresh one). The JSON goes
to stdout, the table to stderr, and both into a run folder under `runs_dir`.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

from tvad_jax.config import ConfigError

STAGES = ("stage1", "stage2", "encoder")
STAGE_NAMES = {"1": "stage1", "2": "stage2", "encoder": "encoder", "stage1": "stage1",
               "stage2": "stage2"}
AXES = ("data", "fsdp", "tensor")
_CHILD_ENV = "TVAD_PLAN_CHILD"


class _IntermixedParser(argparse.ArgumentParser):
    """Lets `key=value` overrides follow options (`plan CONFIG --mesh ... a=b`): plain argparse
    fills a `nargs="*"` positional only from the arguments before the first option."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inside:
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def add_parser(subparsers) -> None:
    """Add the `plan` command."""
    parser = subparsers.add_parser(
        "plan", help="memory and FLOPs per device of a stage, compiled on simulated devices",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="plan config: llava7b, qwen25vl7b, shipped or tiny")
    parser.add_argument("--mesh", default="fsdp=-1",
                        help="mesh axis sizes, e.g. data=2,fsdp=4,tensor=1 (default fsdp=-1)")
    parser.add_argument("--devices", type=int, default=None,
                        help="simulated CPU devices (default: the mesh's product, or 8)")
    parser.add_argument("--stage", default="all",
                        help="1, 2, encoder, all, or a comma list (default all)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="plan config overrides, e.g. batch_per_device=2")
    parser.set_defaults(func=run_plan)
    parser.__class__ = _IntermixedParser


def parse_mesh(text: str):
    """'data=2,fsdp=4,tensor=1' -> MeshConfig. Unnamed axes keep MeshConfig's defaults
    (data=-1, fsdp=1, tensor=1), except that data is 1 when another axis is -1."""
    from tvad_jax.train.mesh import MeshConfig  # deferred: no JAX before the device count

    sizes = {}
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in AXES:
            raise ConfigError(f"--mesh {text!r}: {item!r} is not AXIS=SIZE with AXIS one of "
                              f"{', '.join(AXES)} (e.g. data=2,fsdp=4,tensor=1)")
        if key in sizes:
            raise ConfigError(f"--mesh {text!r}: axis {key!r} given twice")
        try:
            size = int(value)
        except ValueError:
            raise ConfigError(f"--mesh {text!r}: size {value.strip()!r} of {key!r} is not an "
                              "integer") from None
        if size == 0 or size < -1:
            raise ConfigError(f"--mesh {text!r}: size of {key!r} must be positive or -1")
        sizes[key] = size
    if not sizes:
        raise ConfigError(f"--mesh {text!r}: no axis given (e.g. data=2,fsdp=4,tensor=1)")
    if -1 in sizes.values():
        sizes.setdefault("data", 1)  # the rest goes to the axis the user marked -1
    return MeshConfig(**sizes)


def parse_stages(text: str) -> tuple[str, ...]:
    if text.strip() == "all":
        return STAGES
    out = []
    for item in (s.strip() for s in text.split(",") if s.strip()):
        if item not in STAGE_NAMES:
            raise ConfigError(f"--stage {text!r}: {item!r} is not one of 1, 2, encoder, all")
        if STAGE_NAMES[item] not in out:
            out.append(STAGE_NAMES[item])
    if not out:
        raise ConfigError("--stage: no stage given")
    return tuple(out)


def device_count(mesh_cfg, devices: int | None) -> int:
    from tvad_jax.train.mesh import mesh_shape  # deferred: no JAX before the device count

    sizes = [mesh_cfg.data, mesh_cfg.fsdp, mesh_cfg.tensor]
    if devices is None:
        devices = 8 if -1 in sizes else math.prod(sizes)
    if devices < 1:
        raise ConfigError(f"--devices must be >= 1, got {devices}")
    try:
        mesh_shape(mesh_cfg, devices)
    except ValueError as err:
        raise ConfigError(f"--mesh: {err}") from None
    return devices


def _claim_cpu_devices(n: int) -> bool:
    """Make JAX's CPU backend have n devices if it has not started yet; whether the running
    backend has n CPU devices."""
    import jax  # deferred: configured here, before its backend starts

    started = True
    try:
        from jax._src import xla_bridge  # deferred: as above

        started = xla_bridge.backends_are_initialized()
    except (ImportError, AttributeError):
        pass
    if not started:
        try:
            jax.config.update("jax_platforms", "cpu")
            jax.config.update("jax_num_cpu_devices", n)
        except RuntimeError:  # the backend started after all
            pass
    try:
        return len(jax.devices("cpu")) == n
    except RuntimeError:
        return False


def _rerun(args, devices: int) -> int:
    """Run this command again in a fresh interpreter whose CPU backend has `devices`."""
    import subprocess  # deferred: only for the re-run

    if os.environ.get(_CHILD_ENV):
        raise ConfigError(f"could not get {devices} simulated CPU devices (set "
                          f"XLA_FLAGS=--xla_force_host_platform_device_count={devices} and "
                          "JAX_PLATFORMS=cpu)")
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices),
               **{_CHILD_ENV: "1"})
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    argv = [sys.executable, "-m", "tvad_jax.commands.plan", args.config, "--mesh", args.mesh,
            "--devices", str(devices), "--stage", args.stage, *args.overrides]
    print(f"[tvad] plan: JAX already runs with another device count; re-running with "
          f"{devices} simulated CPU devices", file=sys.stderr)
    return subprocess.run(argv, env=env).returncode


def run_plan(args) -> int:
    # Imports deferred: JAX must not start its CPU backend before the device count is set.
    from tvad_jax import configs  # noqa: F401  deferred (registers the plan configs)
    from tvad_jax import config as config_lib  # deferred
    from tvad_jax.data.files import check_output_dir  # deferred
    from tvad_jax.jobs import plan as plan_lib  # deferred

    mesh_cfg = parse_mesh(args.mesh)
    devices = device_count(mesh_cfg, args.devices)
    stages = parse_stages(args.stage)
    pcfg = config_lib.resolve(args.config, args.overrides, kind="plan")
    plan_lib.shapes(pcfg)  # config problems fail here, before JAX starts
    check_output_dir(pcfg.runs_dir)
    if not _claim_cpu_devices(devices):
        return _rerun(args, devices)

    import jax  # deferred: after the CPU device count is claimed

    from tvad_jax import runs  # deferred: as above
    from tvad_jax.train import mesh as mesh_lib  # deferred: as above

    mesh = mesh_lib.make_mesh(mesh_cfg, jax.devices("cpu")[:devices])
    result = plan_lib.plan(pcfg, mesh, stages,
                           report=lambda msg: print(msg, file=sys.stderr))
    result = {"config": args.config, "overrides": list(args.overrides), **result}
    table = plan_lib.format_table(result)
    run_dir = runs.new_run_dir("plan", pcfg, pcfg.runs_dir)
    text = plan_lib.dumps(result)
    (run_dir / "plan.json").write_text(text + "\n")
    (run_dir / "plan.txt").write_text(table + "\n")
    print(table, file=sys.stderr)
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m tvad_jax.commands.plan ...` (what `tvad plan ...` runs)."""
    parser = argparse.ArgumentParser(prog="tvad")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["plan", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args) or 0
    except ConfigError as err:
        print(f"tvad: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
