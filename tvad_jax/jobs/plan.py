"""`tvad plan`: T-VAD's steps at real scale, lowered and compiled ahead of time on simulated
devices, read for per-device memory and FLOPs (`train.plan` reads the executable).

    pcfg = config_lib.resolve("llava7b", kind="plan")            # a PlanConfig (real scale)
    mesh = mesh_lib.make_mesh(MeshConfig(data=2, fsdp=4, tensor=1), jax.devices("cpu"))
    report = plan(pcfg, mesh, stages=("stage1", "stage2", "encoder"))   # a JSON-ready dict

Stages: "stage1" (the AHD on cached ViT features), "stage2" (RAE + special tokens + LoRA on
the frozen decoder, one SFT phase), and "encoder" (the frozen cache-building pass: the vision
tower and the projector, forward only; no optimizer). The stage steps are the jobs' own
(`jobs.tvad_stages.stage1_spec` / `stage2_spec`) with frozen parts initialized
abstractly. (A little over 300 lines: the plan's shapes, its two stage specs, the two
lowerings and the table read together.)
"""
from __future__ import annotations

import dataclasses
import json
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from tvad_jax import config as config_lib
from tvad_jax.config import ConfigError
from tvad_jax.infer.features import encode_fn
from tvad_jax.jobs.config import PlanConfig
from tvad_jax.jobs.tvad_stages import phase_config, stage1_spec, stage2_spec
from tvad_jax.models import backbone_io, configs as mc, qwen_backbone, qwen_vl
from tvad_jax.models.convert import read_config
from tvad_jax.models.family import LLAVA, family
from tvad_jax.models.rae import prompt_length
from tvad_jax.train import mesh as mesh_lib
from tvad_jax.train.loop import StageSpec, abstract_engine, strip_boxes
from tvad_jax.train.plan import GiB, analyze, count, tree_bytes

STAGES = ("stage1", "stage2", "encoder")


def backbone_config(pcfg: PlanConfig):
    """The backbone config a plan uses: token_pool (0 keeps the backbone's own; the LLaVA
    family), the vision dtype, the stage-2 decoder dtype (`job.stage2.dtype`, as
    `jobs.tvad_stages.stage2_decoder_cfg` sets it), remat and the clip length applied."""
    if pcfg.backbone == "llava15_7b":
        bcfg = mc.llava15_7b()
    elif pcfg.backbone == "qwen25vl_7b":
        size = tuple(pcfg.frame_size) or (336,)
        try:
            bcfg = qwen_backbone.backbone_config(qwen_vl.qwen25vl_7b(),
                                                 size[0] if len(size) == 1 else size)
        except ValueError as err:
            raise ConfigError(f"frame_size: {err}") from None
    elif pcfg.backbone == "shipped":
        bcfg = backbone_io.config_from_dict(read_config(backbone_io.SHIPPED_DIR)["backbone"])
    elif pcfg.backbone == "tiny":
        bcfg = mc.tiny_backbone()
    else:
        raise ConfigError(f"backbone must be 'llava15_7b', 'qwen25vl_7b', 'shipped' or 'tiny', "
                          f"got {pcfg.backbone!r}")
    if pcfg.frame_size and family(bcfg) is LLAVA:
        raise ConfigError(f"frame_size is Qwen2.5-VL's; {pcfg.backbone}'s ViT takes "
                          f"{bcfg.vision.image_size} px frames")
    vision = bcfg.vision
    if pcfg.frames % vision.tubelet:
        raise ConfigError(f"frames={pcfg.frames} is not a multiple of the tubelet "
                          f"{vision.tubelet}")
    decoder = dataclasses.replace(bcfg.decoder, dtype=pcfg.job.stage2.dtype, remat=pcfg.remat,
                                  remat_policy=pcfg.remat_policy)
    if family(bcfg) is not LLAVA:
        return dataclasses.replace(bcfg, vision=dataclasses.replace(
            vision, dtype=pcfg.vision_dtype), decoder=decoder)
    vision = dataclasses.replace(vision, dtype=pcfg.vision_dtype,
                                 max_frames=max(vision.max_frames, pcfg.frames))
    return dataclasses.replace(bcfg, vision=vision, decoder=decoder,
                               token_pool=pcfg.token_pool or bcfg.token_pool)


@dataclasses.dataclass(frozen=True)
class Shapes:
    """The per-example shapes a plan implies."""

    hidden: tuple[int, ...]        # one clip's cached ViT layers [I, T', 1+N, D_v]
    maps: tuple[int, ...]          # one video's RAE input [T', h, w, 2]
    tubelets: int                  # T'
    visual_tokens: int             # S_v (the decoder's visual block may add a few around them)
    prompt_tokens: int             # anomaly prompts incl. start/sep/end (0 without)
    text_len: int                  # L
    seq_len: int                   # prefix + S_v (+ block ends) + prompts + L
    prefix_len: int                # the chat format's ids before the visual block


def shapes(pcfg: PlanConfig, bcfg=None) -> Shapes:

    bcfg = bcfg or backbone_config(pcfg)
    tcfg = pcfg.job.model.for_backbone(bcfg)
    fam = family(bcfg)
    v = bcfg.vision
    tubelets = pcfg.frames // v.tubelet
    hidden = (len(v.layer_indices), tubelets, 1 + v.num_patches, v.width)
    maps = (tubelets, *v.grid, 2)
    if fam is not LLAVA:
        per_tubelet = v.tokens_per_tubelet
    elif bcfg.vision_feature_select == "patch":
        per_tubelet = v.num_patches // bcfg.token_pool ** 2
    else:
        per_tubelet = 1 + v.num_patches
    visual = tubelets * per_tubelet
    block = visual + fam.block_extra
    prompts = 0
    if tcfg.anomaly_prompts:
        prompts = prompt_length(0, tubelets - 1, tcfg.rae.prompts_per_step, 0, special=True)
    head = pcfg.prefix_len + block + prompts
    text = pcfg.text_len or pcfg.max_seq_len - head
    if text < 1:
        raise ConfigError(f"max_seq_len={pcfg.max_seq_len} leaves no text after "
                          f"{pcfg.prefix_len} chat prefix, {block} visual and {prompts} prompt "
                          "tokens")
    return Shapes(hidden, maps, tubelets, visual, prompts, text, head + text, pcfg.prefix_len)


# ---------------------------------------------------------------------------------------------
# The stages' functions and abstract batches

def stage_spec(pcfg: PlanConfig, stage: str, bcfg=None) -> StageSpec:
    """The StageSpec of "stage1" or "stage2" that training uses, with frozen parts initialized
    abstractly (boxed, so the decoder shards by its logical axes) and the example of one row
    as ShapeDtypeStructs (no batch axis)."""
    bcfg = bcfg or backbone_config(pcfg)
    tcfg = pcfg.job.model.for_backbone(bcfg)
    sh = shapes(pcfg, bcfg)
    fam = family(bcfg)
    d_t = fam.text_width(bcfg)
    v = bcfg.vision
    f16, sds = jnp.float16, jax.ShapeDtypeStruct
    if stage == "stage1":
        spec = stage1_spec(tcfg, pcfg.job.stage1, lambda: jnp.zeros((2, d_t), jnp.float32),
                           sh.hidden)
        example = {"hidden": sds(sh.hidden, f16),
                   "tubelet_masks": sds((sh.tubelets, *v.frame_size), jnp.uint8),
                   "valid": sds((pcfg.frames,), jnp.bool_)}
        return dataclasses.replace(spec, example=example)
    if stage != "stage2":
        raise ValueError(f"stage must be 'stage1' or 'stage2', got {stage!r}")
    train, layers = phase_config(pcfg.job.stage2, pcfg.phase, tcfg, bcfg.decoder.depth)
    dec = bcfg.decoder

    def frozen_fn(rng):
        embeds = jnp.zeros((1, 1, dec.width), jnp.float32)
        return {"decoder": fam.decoder(bcfg, dec).init(
                    rng, embeds, jnp.zeros((1, 1), jnp.int32))["params"],
                "special_init": jnp.zeros((3, dec.width), jnp.float32)}

    spec = stage2_spec(tcfg, bcfg, train, frozen_fn, sh.maps, layers,
                       prefix=(0,) * sh.prefix_len)    # any ids: only the length matters
    example = {"visual": sds((sh.visual_tokens, dec.width), f16),
               "ids": sds((sh.text_len,), jnp.int32),
               "targets": sds((sh.text_len,), jnp.int32),
               "weights": sds((sh.text_len,), jnp.float32),
               "lengths": sds((), jnp.int32)}
    if tcfg.anomaly_prompts:
        example["maps"] = sds(sh.maps, jnp.float32)
    return dataclasses.replace(spec, example=example)


def global_batch(pcfg: PlanConfig, mesh: Mesh, per_device: int | None = None) -> int:
    dp = mesh_lib.data_parallel_size(mesh)
    if per_device is None and pcfg.global_batch:
        if pcfg.global_batch % dp:
            raise ConfigError(f"global_batch={pcfg.global_batch} does not split over the "
                              f"{dp} data-parallel devices (data x fsdp)")
        return pcfg.global_batch
    return (pcfg.batch_per_device if per_device is None else per_device) * dp


def batched(example: dict, batch: int) -> dict:
    return {k: jax.ShapeDtypeStruct((batch,) + tuple(x.shape), x.dtype)
            for k, x in example.items()}


def plan_train_stage(pcfg: PlanConfig, stage: str, mesh: Mesh,
                     rules=mesh_lib.LOGICAL_AXIS_RULES) -> dict:
    """Lower and compile one train stage's step on abstract inputs; its report."""
    bcfg = backbone_config(pcfg)
    spec = stage_spec(pcfg, stage, bcfg)
    batch = batched(spec.example, global_batch(pcfg, mesh))
    with mesh_lib.mesh_context(mesh, rules):
        t0 = time.perf_counter()
        engine = abstract_engine(spec, mesh, rules)
        lowered = engine.step.lower(engine.state, engine.frozen, batch, engine.rng)
        lower_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    state, state_sh = engine.state, engine.state_sharding
    breakdown = {
        "trainable_params": tree_bytes(state.params, state_sh.params),
        "frozen_params": tree_bytes(engine.frozen, engine.frozen_sharding),
        "optimizer_state": tree_bytes(state.opt_state, state_sh.opt_state),
        "batch": tree_bytes(batch, engine.batch_sharding),
    }
    report = {
        "kind": "train_step",
        "global_batch": int(jax.tree.leaves(batch)[0].shape[0]),
        "batch_shapes": {k: [list(x.shape), str(x.dtype)] for k, x in batch.items()},
        "params": {"trainable": count(state.params), "frozen": count(engine.frozen)},
        "trainable": list(spec.config.trainable),
        "accumulation_steps": spec.config.optim.accumulation_steps,
        "global_bytes": {"trainable_params": tree_bytes(state.params),
                         "frozen_params": tree_bytes(engine.frozen),
                         "optimizer_state": tree_bytes(state.opt_state),
                         "batch": tree_bytes(batch)},
    }
    report.update(analyze(compiled, breakdown, len(mesh.devices.flat)))
    report.update(lower_s=round(lower_s, 2), compile_s=round(compile_s, 2))
    return report


def plan_encoder(pcfg: PlanConfig, mesh: Mesh, rules=mesh_lib.LOGICAL_AXIS_RULES) -> dict:
    """Lower and compile the frozen vision tower (+ projector) forward pass over a batch of
    clips (what building the feature cache runs); its report."""
    bcfg = backbone_config(pcfg)
    fam = family(bcfg)
    if fam is LLAVA:
        bcfg = dataclasses.replace(bcfg, text=None)                 # no text-tower params
    encode = encode_fn(bcfg)
    v = bcfg.vision
    boxed = fam.abstract_params(bcfg, boxed=True)
    boxed = {k: boxed[k] for k in fam.encoder_parts}
    params = strip_boxes(boxed)
    n = global_batch(pcfg, mesh, pcfg.encoder_batch_per_device)
    frames = jax.ShapeDtypeStruct((n, pcfg.frames, *v.frame_size, 3), jnp.float32)
    with mesh_lib.mesh_context(mesh, rules):
        t0 = time.perf_counter()
        param_sh = mesh_lib.logical_to_sharding(boxed, mesh, rules)
        batch_sh = mesh_lib.batch_sharding(mesh, rules)
        fn = jax.jit(encode, in_shardings=(param_sh, batch_sh),
                     out_shardings=batch_sh)
        lowered = fn.lower(params, frames)
        lower_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    out = jax.eval_shape(encode, params, frames)
    breakdown = {"trainable_params": 0, "frozen_params": tree_bytes(params, param_sh),
                 "optimizer_state": 0, "batch": tree_bytes(frames, batch_sh)}
    report = {
        "kind": "forward",
        "global_batch": n,
        "batch_shapes": {"frames": [list(frames.shape), str(frames.dtype)]},
        "output_shapes": {"hidden": [list(out[0].shape), str(out[0].dtype)],
                          "visual": [list(out[1].shape), str(out[1].dtype)]},
        "params": {"trainable": 0, "frozen": count(params)},
        "global_bytes": {"frozen_params": tree_bytes(params), "batch": tree_bytes(frames)},
    }
    report.update(analyze(compiled, breakdown, len(mesh.devices.flat)))
    report.update(lower_s=round(lower_s, 2), compile_s=round(compile_s, 2))
    return report


# ---------------------------------------------------------------------------------------------
# The whole plan

def plan(pcfg: PlanConfig, mesh: Mesh, stages: Sequence[str] = STAGES,
         rules=mesh_lib.LOGICAL_AXIS_RULES, report: Callable[[str], None] | None = None
         ) -> dict:
    """Plan `stages` of `pcfg` on `mesh`: a JSON-ready dict (see the module docstring)."""

    bcfg = backbone_config(pcfg)
    sh = shapes(pcfg, bcfg)
    out = {
        "mesh": {k: int(v) for k, v in mesh.shape.items()},
        "devices": int(mesh.devices.size),
        "platform": mesh.devices.flat[0].platform,
        "shapes": dataclasses.asdict(sh),
        "plan": config_lib.to_dict(pcfg),
        "stages": {},
    }
    for stage in stages:
        if report:
            report(f"[tvad] plan: lowering and compiling {stage} on {out['devices']} devices "
                   f"{out['mesh']}")
        t0 = time.perf_counter()
        result = (plan_encoder(pcfg, mesh, rules) if stage == "encoder"
                  else plan_train_stage(pcfg, stage, mesh, rules))
        result["wall_s"] = round(time.perf_counter() - t0, 2)
        out["stages"][stage] = result
    return out


def _unit(result: dict) -> tuple[str, float]:
    sizes = [v for r in result["stages"].values() for v in r["per_device_bytes"].values()
             if v is not None]
    top = max(sizes, default=0)
    for name, size in (("GiB", GiB), ("MiB", float(1 << 20))):
        if top >= size:
            return name, size
    return "KiB", 1024.0


def format_table(result: dict) -> str:
    """A readable table of a `plan` result (per-device memory and FLOPs per step)."""
    unit, size = _unit(result)
    mem = lambda n: "-" if n is None else f"{n / size:.3f}"  # noqa: E731
    flops = lambda f: "-" if f is None else f"{f:.4g}"  # noqa: E731
    cols = [("stage", 8), ("batch", 6), ("train", 8), ("frozen", 8), ("opt", 8),
            ("batch_b", 8), ("args", 8), ("out", 8), ("alias", 8), ("temp", 8), ("peak", 8),
            ("FLOPs/dev", 11), ("XLA-raw", 11), ("compile", 8)]
    lines = [(f"mesh {result['mesh']} on {result['devices']} simulated "
              f"{result['platform']} devices; shapes {result['shapes']}"),
             (f"per-device memory in {unit}: train/frozen = parameters, opt = optimizer "
              "state, batch_b = the batch's shard; args/out/alias/temp (activations) from "
              "memory_analysis(); peak = args + out - alias + temp"),
             ("FLOPs per step per device: XLA cost analysis with loop bodies times their "
              "trip counts (XLA-raw: loop bodies once); batch = global examples per step"),
             " ".join(name.rjust(w) for name, w in cols)]
    for stage, r in result["stages"].items():
        b = r["per_device_bytes"]
        row = [stage, str(r["global_batch"]), mem(b["trainable_params"]),
               mem(b["frozen_params"]), mem(b["optimizer_state"]), mem(b["batch"]),
               mem(b["arguments"]), mem(b["outputs"]), mem(b["aliased"]), mem(b["temp"]),
               mem(b["peak_estimate"]), flops(r["flops_per_device"]),
               flops(r["flops_per_device_xla"]), f"{r['compile_s']:.1f}s"]
        lines.append(" ".join(v.rjust(w) for v, (_, w) in zip(row, cols)))
    return "\n".join(lines)


def dumps(result: dict) -> str:
    return json.dumps(result, indent=2)
