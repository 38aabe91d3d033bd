"""Plan a run from this machine: lower and compile a stage's step ahead of time on abstract
inputs and read its per-device memory and FLOPs off the compiled executable.

    pcfg = get_plan("llava7b")                                  # a PlanConfig (real scale)
    mesh = mesh_lib.make_mesh(MeshConfig(data=2, fsdp=4, tensor=1), jax.devices("cpu"))
    report = plan(pcfg, mesh, stages=("stage1", "stage2", "encoder"))   # a JSON-ready dict

Nothing is allocated: parameters and optimizer state come from `jax.eval_shape`, the batch is
`jax.ShapeDtypeStruct`s, and the step is the engine's own (`make_train_step` +
`jit_train_step`, shardings derived exactly as `train.loop.build` derives them), lowered with
`.lower(...)` and compiled with `.compile()`. On simulated CPU devices
(`jax_num_cpu_devices` / `--xla_force_host_platform_device_count`) the SPMD partitioner runs
as it would on a pod, so the compiled program is one device's share of the step.

What is reported per stage (all per device unless the key says otherwise):
  per_device_bytes:
    trainable_params, frozen_params, optimizer_state, batch   from the shardings of the
        abstract trees (shard shape x itemsize, summed): the arguments' breakdown;
    arguments, outputs, aliased, temp, generated_code          `compiled.memory_analysis()`
        (temp = activations and every other scratch buffer of the step);
    peak_estimate = arguments + outputs - aliased + temp.
  flops_per_device: XLA's `cost_analysis()` FLOPs with the matmul/convolution FLOPs inside
    loops multiplied by their trip counts. XLA's cost analysis counts a `while` body once
    (a scanned 32-layer decoder would show 1/32 of its layer FLOPs); the raw figure is kept as
    `flops_per_device_xla`, and `matmul_flops_per_device` is the loop-aware count of dot and
    convolution FLOPs alone, read from the compiled HLO. flops_total = per device x devices.
  Missing analyses (a backend that returns None) appear as null.

Stages: "stage1" (the AHD on cached ViT features), "stage2" (RAE + special tokens + LoRA on
the frozen decoder, one SFT phase), and "encoder" (the frozen cache-building pass: the vision
tower and the projector, forward only; no optimizer). The CPU backend's buffer assignment is
close to, not the same as, a TPU's or GPU's (it may widen bf16 temporaries, fuses
differently): read the numbers as a plan, with a margin.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from typing import Any, Callable, Literal, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding

from tvad_jax.models import configs as mc
from tvad_jax.models.configs import BackboneConfig
from tvad_jax.train import mesh as mesh_lib
from tvad_jax.train.flops import step_flops
from tvad_jax.train.loop import TrainConfig
from tvad_jax.train.optim import make_optimizer
from tvad_jax.train.state import TrainState, init_state, split_params, state_shardings
from tvad_jax.train.step import LossFn, jit_train_step, make_train_step

STAGES = ("stage1", "stage2", "encoder")
GiB = float(1 << 30)


# ---------------------------------------------------------------------------------------------
# Plan configs

def _tvad_job():
    from tvad_jax.stages.tvad import TVADJobConfig

    return TVADJobConfig()


@dataclasses.dataclass(frozen=True)
class PlanConfig:
    """What to plan: the backbone's shapes, the clip, the sequence and the engine configs.

    Attributes:
      backbone: "llava15_7b" (LLaVA-1.5-7B: CLIP ViT-L/14-336 + Vicuna-7B, CLIP-L text width
        768 for the class features), "shipped" (the shipped default backbone's config, read
        from its config.json; no weights loaded) or "tiny" (`configs.tiny_backbone`).
      frames: frames per clip; T' = frames / tubelet tubelets.
      token_pool: visual tokens per tubelet = N / token_pool^2 (LLaVA: 1; 2 keeps 144 of 576).
      max_seq_len: decoder sequence budget (visual + anomaly prompts + text) in stage 2.
      text_len: text tokens in stage 2; 0 = whatever fills max_seq_len.
      batch_per_device: micro-batch per data-parallel device (examples per step per
        data x fsdp slot; the tensor axis splits the model, not the batch).
      global_batch: examples per train step; 0 = batch_per_device x data x fsdp.
      encoder_batch_per_device: clips per data-parallel device in the encoder pass.
      vision_dtype: compute dtype of the vision tower in the encoder pass.
      remat: rematerialize each decoder layer in stage 2's backward pass.
      phase: the stage-2 phase: "A" (LoRA on every layer) or "B" (the last
        `job.stage2.lora_layers_b`).
      job: the T-VAD job config: heads (`job.model`), the engine configs (optimizer,
        accumulation, trainable patterns) of `job.stage1.train` and `job.stage2.phase_a|b`,
        and the stage-2 decoder compute dtype `job.stage2.dtype`.
      runs_dir: where `tvad plan` writes its run folder.
    """

    backbone: str = "llava15_7b"
    frames: int = 16
    token_pool: int = 2
    max_seq_len: int = 2048
    text_len: int = 0
    batch_per_device: int = 1
    global_batch: int = 0
    encoder_batch_per_device: int = 1
    vision_dtype: str = "bfloat16"
    remat: bool = True
    phase: Literal["A", "B"] = "A"
    job: Any = dataclasses.field(default_factory=_tvad_job)
    runs_dir: str = "runs"


def _with_optim(train: TrainConfig, **optim) -> TrainConfig:
    return dataclasses.replace(train, optim=dataclasses.replace(train.optim, **optim))


def llava7b_plan() -> PlanConfig:
    """The paper's real scale: LLaVA-1.5-7B, 16-frame clips (T' = 8), 4 AHD layers, 2 x 2
    token pooling (144 visual tokens per tubelet, 1152 per clip), sequences of 2048, micro-batch
    1 per device with 8 accumulation steps, stage-2 LR 2e-4, bf16 compute, remat."""
    job = _tvad_job()
    s2 = job.stage2
    job = dataclasses.replace(job, stage2=dataclasses.replace(
        s2, dtype="bfloat16",
        phase_a=_with_optim(s2.phase_a, learning_rate=2e-4, accumulation_steps=8),
        phase_b=_with_optim(s2.phase_b, learning_rate=2e-4, accumulation_steps=8)))
    return PlanConfig(job=job)


def shipped_plan() -> PlanConfig:
    """The shipped default backbone's shapes (hidden [4, 8, 65, 128] for 16 frames at 96 px),
    float32, no remat, stage 2 text of the shipped `max_text_len`."""
    job = _tvad_job()
    return PlanConfig(backbone="shipped", token_pool=0, max_seq_len=0,
                      text_len=job.stage2.max_text_len, vision_dtype="float32", remat=False,
                      job=job)


def tiny_plan() -> PlanConfig:
    """A seconds-to-compile plan for tests: `configs.tiny_backbone` (32 px frames of 8 px
    patches, decoder 32 x 2), 8-frame clips, 8 text tokens."""
    return PlanConfig(backbone="tiny", frames=8, token_pool=2, max_seq_len=0, text_len=8,
                      vision_dtype="float32", remat=False)


PLANS: dict[str, Callable[[], PlanConfig]] = {
    "llava7b": llava7b_plan,
    "shipped": shipped_plan,
    "tiny": tiny_plan,
}


def get_plan(name: str, overrides: Sequence[str] = ()) -> PlanConfig:
    """The named plan config with `key=value` overrides (as every config takes them)."""
    from tvad_jax import config as config_lib

    if name not in PLANS:
        raise config_lib.ConfigError(f"unknown plan config {name!r}; known: "
                                     f"{', '.join(sorted(PLANS))}")
    return config_lib.apply_overrides(PLANS[name](), list(overrides))


def backbone_config(pcfg: PlanConfig) -> BackboneConfig:
    """The backbone config a plan uses: token_pool (0 keeps the backbone's own), the vision
    dtype, the stage-2 decoder dtype (`job.stage2.dtype`, as `stages.tvad.stage2_decoder_cfg`
    sets it), remat and the clip length applied."""
    if pcfg.backbone == "llava15_7b":
        bcfg = mc.llava15_7b()
    elif pcfg.backbone == "shipped":
        from tvad_jax.models import backbone_io
        from tvad_jax.models.convert import read_config

        bcfg = backbone_io.config_from_dict(read_config(backbone_io.SHIPPED_DIR)["backbone"])
    elif pcfg.backbone == "tiny":
        bcfg = mc.tiny_backbone()
    else:
        from tvad_jax.config import ConfigError

        raise ConfigError(f"backbone must be 'llava15_7b', 'shipped' or 'tiny', got "
                          f"{pcfg.backbone!r}")
    vision = bcfg.vision
    if pcfg.frames % vision.tubelet:
        from tvad_jax.config import ConfigError

        raise ConfigError(f"frames={pcfg.frames} is not a multiple of the tubelet "
                          f"{vision.tubelet}")
    vision = dataclasses.replace(vision, dtype=pcfg.vision_dtype,
                                 max_frames=max(vision.max_frames, pcfg.frames))
    decoder = dataclasses.replace(bcfg.decoder, dtype=pcfg.job.stage2.dtype, remat=pcfg.remat)
    return dataclasses.replace(bcfg, vision=vision, decoder=decoder,
                               token_pool=pcfg.token_pool or bcfg.token_pool)


@dataclasses.dataclass(frozen=True)
class Shapes:
    """The per-example shapes a plan implies."""

    hidden: tuple[int, ...]        # one clip's cached ViT layers [I, T', 1+N, D_v]
    tubelets: int                  # T'
    visual_tokens: int             # S_v
    prompt_tokens: int             # anomaly prompts incl. start/sep/end (0 without)
    text_len: int                  # L
    seq_len: int                   # S_v + prompts + L


def shapes(pcfg: PlanConfig, bcfg: BackboneConfig | None = None) -> Shapes:
    from tvad_jax.config import ConfigError
    from tvad_jax.models.rae import prompt_length

    bcfg = bcfg or backbone_config(pcfg)
    tcfg = pcfg.job.model.for_backbone(bcfg)
    v = bcfg.vision
    tubelets = pcfg.frames // v.tubelet
    hidden = (len(v.layer_indices), tubelets, 1 + v.num_patches, v.width)
    per_tubelet = (v.num_patches // bcfg.token_pool ** 2 if bcfg.vision_feature_select == "patch"
                   else 1 + v.num_patches)
    visual = tubelets * per_tubelet
    prompts = 0
    if tcfg.anomaly_prompts:
        prompts = prompt_length(0, tubelets - 1, tcfg.rae.prompts_per_step, 0, special=True)
    text = pcfg.text_len or pcfg.max_seq_len - visual - prompts
    if text < 1:
        raise ConfigError(f"max_seq_len={pcfg.max_seq_len} leaves no text after {visual} "
                          f"visual and {prompts} prompt tokens")
    return Shapes(hidden, tubelets, visual, prompts, text, visual + prompts + text)


# ---------------------------------------------------------------------------------------------
# The engine on abstract values

@dataclasses.dataclass
class AbstractEngine:
    """`train.loop.Engine` without values: the jitted step, and abstract arguments for it.

    state, frozen: ShapeDtypeStruct trees (global shapes, logical-axis boxes stripped);
    *_sharding: their layouts; rng: the abstract base key of the step.
    """

    mesh: Mesh
    step: Callable
    state: TrainState
    frozen: Any
    state_sharding: TrainState
    frozen_sharding: Any
    batch_sharding: NamedSharding
    rng: Any


def abstract_engine(config: TrainConfig, *, init_fn: Callable[[jax.Array], Any],
                    loss_fn: LossFn, mesh: Mesh, rules=mesh_lib.LOGICAL_AXIS_RULES
                    ) -> AbstractEngine:
    """What `train.loop.build` builds, on `jax.eval_shape` values (nothing allocated): the
    same shardings (`logical_to_sharding`, `split_params`, `state_shardings`), optimizer and
    jitted step (`make_train_step`, `jit_train_step`)."""
    init_rng = jax.random.key(config.loop.seed)
    abstract = jax.eval_shape(init_fn, init_rng)
    shardings = mesh_lib.logical_to_sharding(abstract, mesh, rules)
    params = _strip(abstract)
    trainable, frozen = split_params(params, config.trainable)
    train_sh, frozen_sh = split_params(shardings, config.trainable)
    tx, lr_at = make_optimizer(config.optim, config.loop.steps)
    state_sh = state_shardings(train_sh, tx, trainable, mesh)
    state = jax.eval_shape(lambda p: init_state(p, tx), trainable)
    batch_sh = mesh_lib.batch_sharding(mesh, rules)
    step = jit_train_step(make_train_step(loss_fn, tx, lr_at), mesh, state_sh, frozen_sh,
                          batch_sh)
    rng = jax.eval_shape(lambda: jax.random.key(0))
    return AbstractEngine(mesh, step, state, frozen, state_sh, frozen_sh, batch_sh, rng)


def _strip(tree: Any) -> Any:
    """The values of a tree of logical-axis boxes (no sharding constraint applied, unlike
    `nn.unbox` inside a mesh context)."""
    return jax.tree.map(lambda x: x.value if isinstance(x, nn.meta.AxisMetadata) else x, tree,
                        is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata))


def tree_bytes(tree: Any, shardings: Any = None) -> int:
    """Bytes of a tree of arrays/ShapeDtypeStructs: global, or per device (the largest shard
    of each leaf) given matching shardings (one sharding may stand for the whole tree)."""
    leaves = jax.tree.leaves(tree)
    if shardings is None:
        return int(sum(math.prod(x.shape) * _itemsize(x.dtype) for x in leaves))
    if isinstance(shardings, jax.sharding.Sharding):
        shards = [shardings] * len(leaves)
    else:
        shards = jax.tree.leaves(shardings, is_leaf=lambda s: isinstance(s, jax.sharding.Sharding))
    assert len(shards) == len(leaves), (len(shards), len(leaves))
    total = 0
    for x, s in zip(leaves, shards):
        shape = s.shard_shape(x.shape) if x.shape else ()
        total += math.prod(shape) * _itemsize(x.dtype)
    return int(total)


def _itemsize(dtype) -> int:
    if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return 8  # a threefry key: 2 x uint32
    return np.dtype(dtype).itemsize


def _count(tree: Any) -> int:
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))


# ---------------------------------------------------------------------------------------------
# The stages' functions and abstract batches

def stage_fns(pcfg: PlanConfig, stage: str, bcfg: BackboneConfig | None = None):
    """(train config, init_fn, loss_fn, abstract example) of "stage1" or "stage2": the T-VAD
    stage's own functions, with frozen parts initialized abstractly (boxed, so the decoder
    shards by its logical axes). The example is one row's ShapeDtypeStructs (no batch axis)."""
    from tvad_jax.models.ahd import AHD
    from tvad_jax.models.decoder import Decoder
    from tvad_jax.stages.tvad import stage1_fns, stage2_fns

    bcfg = bcfg or backbone_config(pcfg)
    tcfg = pcfg.job.model.for_backbone(bcfg)
    sh = shapes(pcfg, bcfg)
    d_t = bcfg.text.width
    v = bcfg.vision
    f16, sds = jnp.float16, jax.ShapeDtypeStruct
    if stage == "stage1":
        s1 = pcfg.job.stage1
        init_fn, loss_fn = stage1_fns(tcfg, lambda: jnp.zeros((2, d_t), jnp.float32),
                                      sh.hidden, s1.target)
        example = {"hidden": sds(sh.hidden, f16),
                   "tubelet_masks": sds((sh.tubelets, v.image_size, v.image_size), jnp.uint8),
                   "valid": sds((pcfg.frames,), jnp.bool_)}
        return s1.train, init_fn, loss_fn, example
    if stage != "stage2":
        raise ValueError(f"stage must be 'stage1' or 'stage2', got {stage!r}")
    s2 = pcfg.job.stage2
    train = s2.phase_a if pcfg.phase == "A" else s2.phase_b
    layers = None if pcfg.phase == "A" else min(s2.lora_layers_b, bcfg.decoder.depth)
    trainable = train.trainable if tcfg.anomaly_prompts else ("lora/.*",)
    train = dataclasses.replace(train, trainable=trainable)
    dec = bcfg.decoder

    def frozen_fn(rng):
        r_dec, r_ahd = jax.random.split(rng)
        embeds = jnp.zeros((1, 1, dec.width), jnp.float32)
        out = {"decoder": Decoder(dec).init(r_dec, embeds, jnp.zeros((1, 1), jnp.int32))[
                   "params"],
               "special_init": jnp.zeros((3, dec.width), jnp.float32)}
        if tcfg.anomaly_prompts:
            text = jnp.zeros((2, d_t), jnp.float32)
            hidden = [jnp.zeros((1,) + sh.hidden[1:], jnp.float32)] * sh.hidden[0]
            out["ahd"] = AHD(tcfg.ahd).init(r_ahd, hidden, text)["params"]
            out["text"] = text
        return out

    init_fn, loss_fn = stage2_fns(tcfg, bcfg, frozen_fn, sh.hidden, layers)
    example = {"visual": sds((sh.visual_tokens, dec.width), f16),
               "ids": sds((sh.text_len,), jnp.int32),
               "targets": sds((sh.text_len,), jnp.int32),
               "lengths": sds((), jnp.int32)}
    if tcfg.anomaly_prompts:
        example["hidden"] = sds(sh.hidden, f16)
    return train, init_fn, loss_fn, example


def global_batch(pcfg: PlanConfig, mesh: Mesh, per_device: int | None = None) -> int:
    dp = mesh_lib.data_parallel_size(mesh)
    if per_device is None and pcfg.global_batch:
        if pcfg.global_batch % dp:
            from tvad_jax.config import ConfigError

            raise ConfigError(f"global_batch={pcfg.global_batch} does not split over the "
                              f"{dp} data-parallel devices (data x fsdp)")
        return pcfg.global_batch
    return (pcfg.batch_per_device if per_device is None else per_device) * dp


def batched(example: dict, batch: int) -> dict:
    return {k: jax.ShapeDtypeStruct((batch,) + tuple(x.shape), x.dtype)
            for k, x in example.items()}


# ---------------------------------------------------------------------------------------------
# Lowering, compiling, reading the executable

def plan_train_stage(pcfg: PlanConfig, stage: str, mesh: Mesh,
                     rules=mesh_lib.LOGICAL_AXIS_RULES) -> dict:
    """Lower and compile one train stage's step on abstract inputs; its report."""
    bcfg = backbone_config(pcfg)
    train, init_fn, loss_fn, example = stage_fns(pcfg, stage, bcfg)
    batch = batched(example, global_batch(pcfg, mesh))
    with mesh_lib.mesh_context(mesh, rules):
        t0 = time.perf_counter()
        engine = abstract_engine(train, init_fn=init_fn, loss_fn=loss_fn, mesh=mesh,
                                 rules=rules)
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
        "params": {"trainable": _count(state.params), "frozen": _count(engine.frozen)},
        "trainable": list(train.trainable),
        "accumulation_steps": train.optim.accumulation_steps,
        "global_bytes": {"trainable_params": tree_bytes(state.params),
                         "frozen_params": tree_bytes(engine.frozen),
                         "optimizer_state": tree_bytes(state.opt_state),
                         "batch": tree_bytes(batch)},
    }
    report.update(analyze(compiled, breakdown, len(mesh.devices.flat)))
    report.update(lower_s=round(lower_s, 2), compile_s=round(compile_s, 2))
    return report


def encoder_fn(bcfg: BackboneConfig) -> Callable:
    """The cache-building pass (`stages.features.make_encoder`) with the params as an argument:
    params {"vision", "projector"}, frames [B, T, H, W, 3] -> (hidden [B, I, T', 1+N, D_v],
    visual [B, S_v, D]) float16."""
    from tvad_jax.models.vlm import Backbone

    model = Backbone(dataclasses.replace(bcfg, text=None))  # no text-tower params needed

    def encode(params, frames):
        out, tokens = model.apply({"params": params}, frames,
                                  method=Backbone.encode_video_and_tokens)
        hidden = jnp.stack(out.hidden, axis=1)
        return hidden.astype(jnp.float16), tokens.astype(jnp.float16)

    return encode


def plan_encoder(pcfg: PlanConfig, mesh: Mesh, rules=mesh_lib.LOGICAL_AXIS_RULES) -> dict:
    """Lower and compile the frozen vision tower + projector forward pass over a batch of clips
    (what building the feature cache runs); its report."""
    from tvad_jax.models.vlm import abstract_params

    bcfg = backbone_config(pcfg)
    v = bcfg.vision
    boxed = abstract_params(dataclasses.replace(bcfg, text=None), boxed=True)
    boxed = {k: boxed[k] for k in ("vision", "projector")}
    params = _strip(boxed)
    n = global_batch(pcfg, mesh, pcfg.encoder_batch_per_device)
    frames = jax.ShapeDtypeStruct((n, pcfg.frames, v.image_size, v.image_size, 3), jnp.float32)
    with mesh_lib.mesh_context(mesh, rules):
        t0 = time.perf_counter()
        param_sh = mesh_lib.logical_to_sharding(boxed, mesh, rules)
        batch_sh = mesh_lib.batch_sharding(mesh, rules)
        fn = jax.jit(encoder_fn(bcfg), in_shardings=(param_sh, batch_sh),
                     out_shardings=batch_sh)
        lowered = fn.lower(params, frames)
        lower_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    out = jax.eval_shape(encoder_fn(bcfg), params, frames)
    breakdown = {"trainable_params": 0, "frozen_params": tree_bytes(params, param_sh),
                 "optimizer_state": 0, "batch": tree_bytes(frames, batch_sh)}
    report = {
        "kind": "forward",
        "global_batch": n,
        "batch_shapes": {"frames": [list(frames.shape), str(frames.dtype)]},
        "output_shapes": {"hidden": [list(out[0].shape), str(out[0].dtype)],
                          "visual": [list(out[1].shape), str(out[1].dtype)]},
        "params": {"trainable": 0, "frozen": _count(params)},
        "global_bytes": {"frozen_params": tree_bytes(params), "batch": tree_bytes(frames)},
    }
    report.update(analyze(compiled, breakdown, len(mesh.devices.flat)))
    report.update(lower_s=round(lower_s, 2), compile_s=round(compile_s, 2))
    return report


def analyze(compiled, breakdown: dict, devices: int) -> dict:
    """Per-device memory (the argument breakdown plus `memory_analysis()`) and FLOPs
    (`cost_analysis()`, loop-corrected) of a compiled executable; None where the backend
    gives nothing."""
    per_device = dict(breakdown)
    mem = None
    try:
        mem = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        mem = None
    fields = {"arguments": "argument_size_in_bytes", "outputs": "output_size_in_bytes",
              "aliased": "alias_size_in_bytes", "temp": "temp_size_in_bytes",
              "generated_code": "generated_code_size_in_bytes"}
    for key, attr in fields.items():
        value = getattr(mem, attr, None) if mem is not None else None
        per_device[key] = int(value) if value is not None else None
    if mem is not None and None not in (per_device["arguments"], per_device["outputs"],
                                        per_device["aliased"], per_device["temp"]):
        per_device["peak_estimate"] = (per_device["arguments"] + per_device["outputs"]
                                       - per_device["aliased"] + per_device["temp"])
    else:
        per_device["peak_estimate"] = None

    flops, xla_flops, hlo = step_flops(compiled)
    return {
        "per_device_bytes": per_device,
        "flops_per_device": flops,
        "flops_per_device_xla": xla_flops,
        "matmul_flops_per_device": None if hlo is None else hlo["matmul_flops"],
        "flops_total": None if flops is None else flops * devices,
        "loops": None if hlo is None else hlo["loops"],
    }


# ---------------------------------------------------------------------------------------------
# The whole plan

def plan(pcfg: PlanConfig, mesh: Mesh, stages: Sequence[str] = STAGES,
         rules=mesh_lib.LOGICAL_AXIS_RULES, report: Callable[[str], None] | None = None
         ) -> dict:
    """Plan `stages` of `pcfg` on `mesh`: a JSON-ready dict (see the module docstring)."""
    from tvad_jax import config as config_lib

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


def param_axes(tree: Any) -> dict[str, tuple]:
    """'/'-joined path -> (global shape, dtype, logical axis names or None) of a boxed
    abstract params tree (for checking shardings independently)."""
    flat = traverse_util.flatten_dict(tree, sep="/")
    out = {}
    for path, leaf in flat.items():
        if isinstance(leaf, nn.LogicallyPartitioned):
            out[path] = (tuple(leaf.value.shape), leaf.value.dtype, tuple(leaf.names))
        else:
            out[path] = (tuple(leaf.shape), leaf.dtype, None)
    return out

