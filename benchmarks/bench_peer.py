"""Whole models beside their PyTorch eager peers (Hugging Face transformers): the same weights
in one process, runs interleaved; prints one JSON object (and a markdown table on stderr).

    .venv/bin/python benchmarks/bench_peer.py [--only decoder_shipped,llama_1024x8,...]
        [--repeats 3] [--weight-grads direct,autodiff] [--remat none,full,dots] [--tiny]

torch is not a dependency of this project: with it missing, only our side is timed and every
peer field is null. To measure the peer, keep torch out of the venv:
`pip install --target DIR torch` and run with `PYTHONPATH=DIR`.

Workloads (float32; `--tiny` shrinks every one to a few layers of width 32 for the tests):
  decoder_shipped  a Llama decoder of the shipped backbone's size (192 wide, 3 layers, 4 heads,
                   MLP 512, vocabulary 723), batch 4 x 512 tokens
  llama_1024x8     Llama 1024 wide, 8 layers, 16 heads, MLP 2816, vocabulary 32000, batch
                   2 x 512
      forward      logits and the mean next-token cross-entropy
      gradient     the same loss and its gradient for every parameter
      train step   gradient, global-norm clipping to 1, AdamW (lr 1e-4, weight decay 1e-4),
                   parameters and optimizer state threaded through the calls and donated
                   (as `train.step` does; PyTorch's optimizer updates in place)
  greedy_decode    the shipped-size decoder: a 256-token prompt and 64 greedy tokens (no EOS),
                   batch 4 and batch 1: our `models.generate.generate` (one jitted call: KV
                   cache prefill + while loop) against transformers' `generate`
  vit_b_frames     CLIP ViT-B/16 at 224 px (768 wide, 12 layers) on 8 frames, each frame its
                   own attention (our `VisionTransformer`, attention "frame", tubelet 1)
                   against `CLIPVisionModel` on the same frames
  vit_joint_shipped  the shipped video tower's shape (128 wide, 4 layers, 8 px patches at
                   96 px, convolutional stem over 2-frame tubelets, joint attention over a
                   clip's 8 tubelets x 145 tokens) on 8 clips of 16 frames, against a
                   `CLIPVisionModel` of the same width, depth, heads and patches on the same
                   128 frames one by one: different architectures (random weights, nothing
                   to check equal), so the ratio that counts is per token
                   (`peer_time_over_ours_per_token`: the peer's seconds per token over ours)

Our side loads the peer's weights through the project's own loaders (`models.vlm.load_llama`,
`load_clip` on the peer's `save_pretrained` folder), so the outputs are checked equal
(`max_abs_diff`: the loss, the decoded tokens' agreement, the pooled features). Times are the
best of `--repeats` after a warm-up (`_machine.best_time`), ours and the peer's alternating;
`peer_time_over_ours` above 1 means ours is faster. Our gradient is timed once per
`--weight-grads` form (`models.layers.WEIGHT_GRADS`), with the compiled gradient's count of
transposes and copies, so a change to the backward pass shows in one run; our forward and
train step use the first form. `--remat` times it also with each decoder layer as is ("none")
or rematerialized under a `DecoderConfig.remat_policy` ("full", "dots"): `gradient_by_remat`.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import re
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _machine  # noqa: E402
from _output import emit  # noqa: E402

from tvad_jax.launch import reexec_with_huge_pages  # noqa: E402
from tvad_jax.models import layers  # noqa: E402
from tvad_jax.models.configs import (REMAT_POLICIES, BackboneConfig, DecoderConfig,  # noqa: E402
                                     VisionConfig)
from tvad_jax.models.decoder import Decoder  # noqa: E402
from tvad_jax.models.generate import generate  # noqa: E402
from tvad_jax.models.vit import VisionTransformer  # noqa: E402
from tvad_jax.models.vlm import init_params, load_clip, load_llama  # noqa: E402

SHIPPED_DECODER = dict(hidden=192, layers=3, heads=4, mlp=512, vocab=723)
WORKLOADS = {
    "decoder_shipped": dict(kind="lm", **SHIPPED_DECODER, batch=4, length=512),
    "llama_1024x8": dict(kind="lm", hidden=1024, layers=8, heads=16, mlp=2816, vocab=32000,
                         batch=2, length=512),
    "greedy_decode": dict(kind="decode", **SHIPPED_DECODER, batches=(4, 1), prompt=256,
                          new=64),
    "vit_b_frames": dict(kind="vit", hidden=768, layers=12, heads=12, mlp=3072, patch=16,
                         image=224, frames=8),
    "vit_joint_shipped": dict(kind="vit_joint", hidden=128, layers=4, heads=4, mlp=512,
                              patch=8, image=96, frames=16, clips=8),
}
TINY = dict(hidden=32, layers=2, heads=2, mlp=64, vocab=101, length=16, prompt=8, new=4,
            image=32, patch=8, frames=2, clips=2)
LEARNING_RATE, WEIGHT_DECAY, CLIP_NORM = 1e-4, 1e-4, 1.0


def _torch():
    """torch and transformers, or None when torch is not installed."""
    try:
        import torch
        import transformers
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    return torch, transformers


def _llama(w: dict, peer) -> tuple:
    """(the peer's LlamaForCausalLM or None, our DecoderConfig, our params): with torch, ours
    are the peer's random weights read by `models.vlm.load_llama`; without, a fresh init of
    the same architecture."""
    if peer is None:
        cfg = DecoderConfig(vocab_size=w["vocab"], width=w["hidden"], depth=w["layers"],
                            heads=w["heads"], kv_heads=w["heads"], mlp_dim=w["mlp"],
                            max_length=_max_length(w), rms_eps=1e-5, eos_token_id=None)
        return None, cfg, init_params(BackboneConfig(decoder=cfg), jax.random.key(0))["decoder"]
    with tempfile.TemporaryDirectory() as directory:
        model = _llama_peer(peer[1], w, directory)
        cfg, params = load_llama(directory)
    return model, cfg, params


def _max_length(w: dict) -> int:
    return max(w.get("length", 0), w.get("prompt", 0) + w.get("new", 0))


def _llama_peer(tf, w: dict, directory: str):
    config = tf.LlamaConfig(vocab_size=w["vocab"], hidden_size=w["hidden"],
                            intermediate_size=w["mlp"], num_hidden_layers=w["layers"],
                            num_attention_heads=w["heads"], num_key_value_heads=w["heads"],
                            max_position_embeddings=_max_length(w),
                            rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1,
                            eos_token_id=None, pad_token_id=0)
    model = tf.LlamaForCausalLM(config).eval()
    model.save_pretrained(directory, safe_serialization=True)
    return model


def _compiled_counts(compiled) -> dict:
    text = compiled.as_text()
    return {op: len(re.findall(rf"= \S+ {op}\(", text)) for op in ("transpose", "copy")}


def _ratio(peer: float | None, ours: float) -> float | None:
    return None if peer is None else peer / ours


# ------------------------------------------------------------------ language-model steps
def lm_workload(w: dict, peer, repeats: int, weight_grads: list[str], remats: list[str]
                ) -> dict:
    model, cfg, params = _llama(w, peer)
    B, Lq = w["batch"], w["length"]
    ids = np.random.default_rng(0).integers(3, w["vocab"], (B, Lq)).astype(np.int32)
    positions = jnp.broadcast_to(jnp.arange(Lq)[None], (B, Lq))

    def loss_of(decoder):
        def loss(p, ids):
            embeds = decoder.apply({"params": p}, ids, method=Decoder.embed)
            logits, _ = decoder.apply({"params": p}, embeds, positions)
            return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1],
                                                                   ids[:, 1:]).mean()
        return loss

    loss = loss_of(Decoder(cfg))
    optimizer = optax.chain(optax.clip_by_global_norm(CLIP_NORM),
                            optax.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY))
    params = jax.device_put(params)
    ids_j = jnp.asarray(ids)

    def timed_gradient(loss_fn) -> dict:
        grad = jax.jit(jax.value_and_grad(loss_fn)).lower(params, ids_j).compile()
        return {"gradient_s": _machine.best_time(grad, params, ids_j, repeats=repeats),
                **_compiled_counts(grad)}

    ours: dict = {"gradient_by_weight_grad": {}, "gradient_by_remat": {}}
    for method in weight_grads:         # the first form last, so that it stays in force
        layers.set_weight_grad(method)
        ours["gradient_by_weight_grad"][method] = timed_gradient(loss)
    layers.set_weight_grad(weight_grads[0])
    for form in remats:                 # each layer as is ("none") or rematerialized
        remat = {} if form == "none" else {"remat": True, "remat_policy": form}
        ours["gradient_by_remat"][form] = timed_gradient(
            loss_of(Decoder(dataclasses.replace(cfg, **remat))))
    forward = jax.jit(loss).lower(params, ids_j).compile()

    @functools.partial(jax.jit, donate_argnums=(0, 1))    # as the engine's step donates
    def train_step(p, state, ids):
        value, grads = jax.value_and_grad(loss)(p, ids)
        updates, state = optimizer.update(grads, state, p)
        return optax.apply_updates(p, updates), state, value

    carry = [params, optimizer.init(params)]

    def step():
        carry[0], carry[1], value = train_step(carry[0], carry[1], ids_j)
        return value

    ours_loss = float(forward(params, ids_j))
    ours["forward_s"] = _machine.best_time(forward, params, ids_j, repeats=repeats)
    ours["gradient_s"] = ours["gradient_by_weight_grad"][weight_grads[0]]["gradient_s"]
    ours["train_step_s"] = _machine.best_time(step, repeats=repeats)
    result = {"ours": ours, "peer": model and _lm_peer(peer[0], model, ids, repeats)}
    result["loss_abs_diff"] = (None if result["peer"] is None
                               else abs(result["peer"].pop("loss") - ours_loss))
    return _with_ratios(result, ("forward_s", "gradient_s", "train_step_s"))


def _lm_peer(torch, model, ids, repeats: int) -> dict:
    tids = torch.from_numpy(ids).long()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE,
                                  weight_decay=WEIGHT_DECAY, eps=1e-8)

    def forward():
        with torch.no_grad():
            return model(input_ids=tids, labels=tids).loss

    def gradient():
        model.zero_grad(set_to_none=True)
        loss = model(input_ids=tids, labels=tids).loss
        loss.backward()
        return loss

    def train_step():
        loss = gradient()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
        optimizer.step()
        return loss

    loss = float(forward())
    return {"loss": loss, "forward_s": _machine.best_time(forward, repeats=repeats),
            "gradient_s": _machine.best_time(gradient, repeats=repeats),
            "train_step_s": _machine.best_time(train_step, repeats=repeats)}


def _with_ratios(result: dict, keys: tuple[str, ...]) -> dict:
    ours, peer = result["ours"], result["peer"]
    for side in (ours, peer):
        if side is not None and "gradient_s" in side:
            side["gradient_over_forward"] = side["gradient_s"] / side["forward_s"]
            side["train_step_over_forward"] = side["train_step_s"] / side["forward_s"]
    result["peer_time_over_ours"] = {k: _ratio(peer and peer[k], ours[k]) for k in keys}
    return result


# ------------------------------------------------------------------ decoding
def decode_workload(w: dict, peer, repeats: int) -> dict:
    model, cfg, params = _llama(w, peer)
    decoder, out = Decoder(cfg), {}
    for batch in w["batches"]:
        ids = np.random.default_rng(batch).integers(3, w["vocab"], (batch, w["prompt"]))
        embeds = decoder.apply({"params": params}, jnp.asarray(ids, jnp.int32),
                               method=Decoder.embed)

        def ours_fn(embeds=embeds):
            return generate(params, cfg, embeds, None, w["new"], jax.random.key(0))[0]

        tokens = np.asarray(ours_fn())
        row = {"ours": {"decode_s": _machine.best_time(ours_fn, repeats=repeats)}, "peer": None,
               "peer_time_over_ours": {"decode_s": None}}
        out[f"batch_{batch}"] = row
        if model is None:
            continue
        torch = peer[0]
        tids = torch.from_numpy(ids).long()

        def peer_fn(tids=tids):
            with torch.no_grad():
                return model.generate(input_ids=tids, attention_mask=torch.ones_like(tids),
                                      max_new_tokens=w["new"], min_new_tokens=w["new"],
                                      do_sample=False, pad_token_id=0)

        theirs = peer_fn()[:, w["prompt"]:].numpy()
        row["peer"] = {"decode_s": _machine.best_time(peer_fn, repeats=repeats)}
        row["tokens_equal_fraction"] = float(np.mean(theirs == tokens))
        row["peer_time_over_ours"] = {"decode_s": _ratio(row["peer"]["decode_s"],
                                                         row["ours"]["decode_s"])}
    return out


# ------------------------------------------------------------------ vision tower
def vit_workload(w: dict, peer, repeats: int) -> dict:
    model, vision, params = _clip_vision(w, peer)
    frames = np.random.default_rng(0).standard_normal(
        (1, w["frames"], w["image"], w["image"], 3)).astype(np.float32)
    vit = VisionTransformer(vision)
    encode = jax.jit(lambda p, x: vit.apply({"params": p}, x).pooled)
    frames_j = jnp.asarray(frames)
    pooled = np.asarray(encode(params, frames_j))[0]                    # [T, D]
    result = {"ours": {"forward_s": _machine.best_time(encode, params, frames_j,
                                                       repeats=repeats)},
              "peer": None, "peer_time_over_ours": {"forward_s": None}}
    if model is None:
        return result
    pixels = peer[0].from_numpy(frames[0].transpose(0, 3, 1, 2).copy())  # [T, 3, H, W]

    def peer_fn():
        with peer[0].no_grad():
            return model(pixel_values=pixels).pooler_output

    result["peer"] = {"forward_s": _machine.best_time(peer_fn, repeats=repeats)}
    result["pooled_max_abs_diff"] = float(np.abs(peer_fn().numpy() - pooled).max())
    result["peer_time_over_ours"] = {"forward_s": _ratio(result["peer"]["forward_s"],
                                                         result["ours"]["forward_s"])}
    return result


def joint_vit_workload(w: dict, peer, repeats: int) -> dict:
    vision = _vision_config(w, tubelet=2, max_frames=w["frames"], attention="joint",
                            stem="conv", feature_layers=(1.0,))
    params = init_params(BackboneConfig(vision=vision), jax.random.key(0))["vision"]
    clips = np.random.default_rng(0).standard_normal(
        (w["clips"], w["frames"], w["image"], w["image"], 3)).astype(np.float32)
    vit = VisionTransformer(vision)
    encode = jax.jit(lambda p, x: vit.apply({"params": p}, x).pooled)
    tokens_per_frame = (w["image"] // w["patch"]) ** 2 + 1        # patches + class token
    ours = {"forward_s": _machine.best_time(encode, params, jnp.asarray(clips),
                                            repeats=repeats),
            "tokens": w["clips"] * w["frames"] // vision.tubelet * tokens_per_frame}
    result = {"ours": ours, "peer": None, "peer_time_over_ours": {"forward_s": None},
              "peer_time_over_ours_per_token": None}
    if peer is None:
        return result
    torch, tf = peer
    model = _clip_peer(tf, w)
    pixels = torch.from_numpy(clips.reshape(-1, *clips.shape[2:]).transpose(0, 3, 1, 2).copy())

    def peer_fn():
        with torch.no_grad():
            return model(pixel_values=pixels).pooler_output

    result["peer"] = {"forward_s": _machine.best_time(peer_fn, repeats=repeats),
                      "tokens": pixels.shape[0] * tokens_per_frame}
    result["peer_time_over_ours"] = {"forward_s": _ratio(result["peer"]["forward_s"],
                                                         ours["forward_s"])}
    result["peer_time_over_ours_per_token"] = _ratio(
        result["peer"]["forward_s"] / result["peer"]["tokens"], ours["forward_s"] / ours["tokens"])
    return result


def _clip_vision(w: dict, peer) -> tuple:
    """(the peer's CLIPVisionModel or None, our VisionConfig, our params), as `_llama`."""
    overrides = dict(tubelet=1, attention="frame", max_frames=w["frames"], feature_layers=(1.0,))
    if peer is None:
        vision = _vision_config(w, **overrides)
        return None, vision, init_params(BackboneConfig(vision=vision),
                                         jax.random.key(0))["vision"]
    model = _clip_peer(peer[1], w)
    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory, safe_serialization=True)
        cfg, params = load_clip(directory, **overrides)
    return model, cfg.vision, params["vision"]


def _vision_config(w: dict, **fields) -> VisionConfig:
    """Our vision tower of the workload's width, depth, heads, MLP and patches."""
    return VisionConfig(width=w["hidden"], depth=w["layers"], heads=w["heads"],
                        mlp_dim=w["mlp"], patch_size=w["patch"], image_size=w["image"], **fields)


def _clip_peer(tf, w: dict):
    """transformers' CLIPVisionModel of the workload's size (quick GELU), random weights."""
    config = tf.CLIPVisionConfig(hidden_size=w["hidden"], intermediate_size=w["mlp"],
                                 num_hidden_layers=w["layers"], num_attention_heads=w["heads"],
                                 image_size=w["image"], patch_size=w["patch"])
    return tf.CLIPVisionModel(config).eval()


# ------------------------------------------------------------------ the command
def _table(report: dict) -> str:
    rows = ["| workload | part | ours (s) | PyTorch eager (s) | peer time / ours |",
            "|---|---|---|---|---|"]
    for name, result in report["workloads"].items():
        parts = result.items() if name == "greedy_decode" else [("", result)]
        for suffix, r in parts:
            for key, ratio in r["peer_time_over_ours"].items():
                peer = r["peer"][key] if r["peer"] else None
                rows.append(f"| {name} {suffix} | {key[:-2]} | {r['ours'][key]:.4f} | "
                            + (f"{peer:.4f} | {ratio:.2f} |" if peer else "– | – |"))
            if r.get("peer_time_over_ours_per_token"):
                rows.append(f"| {name} | per token | – | – | "
                            f"{r['peer_time_over_ours_per_token']:.2f} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(WORKLOADS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--weight-grads", default=",".join(layers.WEIGHT_GRADS))
    parser.add_argument("--remat", default="", help="also time the gradient with each "
                        "decoder layer rematerialized this way: none, " + ", ".join(REMAT_POLICIES))
    parser.add_argument("--tiny", action="store_true", help="toy sizes (the tests)")
    args = parser.parse_args(argv)
    names = args.only.split(",")
    unknown = sorted(set(names) - set(WORKLOADS))
    weight_grads = args.weight_grads.split(",")
    remats = [r for r in args.remat.split(",") if r]
    if (unknown or set(weight_grads) - set(layers.WEIGHT_GRADS)
            or set(remats) - {"none", *REMAT_POLICIES}):
        parser.error(f"unknown workloads {unknown}, weight grads {weight_grads} or remat "
                     f"forms {remats}")
    peer = _torch()
    report = {"machine": _machine.machine_info(),
              "peer": None if peer is None else {"torch": peer[0].__version__,
                                                 "transformers": peer[1].__version__,
                                                 "threads": peer[0].get_num_threads()},
              "workloads": {}}
    if peer is None:
        print("[bench_peer] torch is not installed: our side only (see the docstring)",
              file=sys.stderr)
    for name in names:
        w = dict(WORKLOADS[name])
        if args.tiny:
            w.update({k: v for k, v in TINY.items() if k in w})
        print(f"[bench_peer] {name} ...", file=sys.stderr, flush=True)
        if w["kind"] == "lm":
            report["workloads"][name] = lm_workload(w, peer, args.repeats, weight_grads,
                                                    remats)
        elif w["kind"] == "decode":
            report["workloads"][name] = decode_workload(w, peer, args.repeats)
        elif w["kind"] == "vit":
            report["workloads"][name] = vit_workload(w, peer, args.repeats)
        else:
            report["workloads"][name] = joint_vit_workload(w, peer, args.repeats)
    emit(report, table=_table(report))
    return 0


if __name__ == "__main__":
    reexec_with_huge_pages()
    sys.exit(main())
