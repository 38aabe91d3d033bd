"""Throughput of VLAVAD's VQA stage (paper 004): crop clips encoded and answered per second.

    .venv/bin/python benchmarks/bench_vqa.py [--backbone DIR | --tiny] [--clips 256]
        [--clip-len 8] [--batch 64] [--max-new-tokens 16] [--repeats 3] [--data DIR]
        [--out FILE]

Prints one JSON object on stdout and a markdown table on stderr. The stage is
`tvad_jax.infer.vqa.CropQA` as `jobs.vlavad.answers_of` builds it (the frozen backbone as
`plain_model` of the default config's T-VAD views; `--batch` is `vlavad.vqa_batch`,
`--max-new-tokens` `vlavad.max_new_tokens`), run on `--clips` K random uint8 crop clips
[K, clip_len, S, S, 3] (S: the backbone's image size; all of one category, "person", so the
clips fill ceil(K / batch) batches, the last one padded as the job pads it):

  encode       `CropQA.encode`: vision tower + projector -> visual tokens and the pooled
               feature (clips per second)
  answers      `CropQA.answers` for each prompt of VLAVAD's pool (`vlavad.prompts`): per
               batch one `Dialogue` (the decoder's prefill of the visual tokens and the
               question, then greedy decoding with the KV cache, stopping once every row of
               the batch wrote EOS) and the answers decoded to text (answers per second;
               generated tokens per answer, EOS included, and tokens per second)
  stage        what `answers_of` runs on a split: encode + the 3 prompts of the pool on the
               training split (before SPA chooses), encode + 1 prompt at test (the pool's
               mean prompt: SPA's choice is not known here), as clips per second
  splits       the implied wall time of the default config's train_normal (3 prompts) and
               test (1 prompt) splits: their crop clips counted from the sidecars of the
               rendered benchmark (`--data`, default the default config's `synth.out_dir`,
               if it holds a finished build of that config; else null with a note), every
               object seen at a frame t with t % answer_stride == answer_stride - 1, times
               the measured seconds per batch, the batches counted as the job makes them
               (encode: per video, padded; answers: per category over the split, padded)

Random crops make the decoder's answers arbitrary (a trained backbone answers real crops
differently, and may stop earlier or later: decoding stops at the batch's longest answer),
but the shapes, and so every cost except the number of decoding steps, are those of real
crops: `tokens_per_answer_mean` and `decode_steps_per_batch_mean` say how many steps ran.

Timing: one warm-up pass (encode, then every prompt: every jitted function compiles there;
its wall time is reported apart and every compile after it is counted), then `--repeats`
timed passes of the same calls; each row is the median of its repeats (outputs are host
arrays and strings, so every time ends with the work done), and a stage's time is the median
over the passes of its calls' sum. `--tiny` swaps the shipped backbone for a random tiny one
(48 px, a tokenizer trained on the questions) built in a temporary folder: the test's size.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _machine  # noqa: E402
from _compiles import CompileClock  # noqa: E402
from _output import emit  # noqa: E402

from tvad_jax.data.object_text import CLASSES, QUESTIONS, question  # noqa: E402
from tvad_jax.data.readers import make_reader  # noqa: E402
from tvad_jax.data.synthetic.generate import is_complete  # noqa: E402
from tvad_jax.data.tracker import track_categories, tracks_from_sidecar  # noqa: E402
from tvad_jax.infer import vqa  # noqa: E402
from tvad_jax.jobs.config import Config  # noqa: E402
from tvad_jax.launch import reexec_with_huge_pages  # noqa: E402
from tvad_jax.models.tvad import load_frozen_backbone, plain_model  # noqa: E402

CATEGORY = "person"
SPLITS = {"train_normal": "train", "test": "test"}    # split -> which prompts: the pool / one


# ----------------------------------------------------------------------------- inputs


def tiny_backbone(directory: str | Path, seed: int = 0) -> Path:
    """A random tiny backbone (the tests' size, 48 px frames) saved in `directory`, with a
    byte-level BPE tokenizer trained on the pool's questions about every class. Its params are
    filled on the host from their abstract shapes (norm scales 1, biases 0, every other
    weight N(0, 0.02)): a traced init of the whole model costs seconds of compiles."""
    from flax import traverse_util

    from tvad_jax.jobs.config import PretrainConfig
    from tvad_jax.jobs.pretrain import backbone_config
    from tvad_jax.models import backbone_io
    from tvad_jax.models.tokenizer import train_tokenizer
    from tvad_jax.models.vlm import abstract_params

    texts = [question(kind, noun) for kind in QUESTIONS for noun in CLASSES]
    tokenizer = train_tokenizer(texts * 4, vocab_size=300)
    bcfg = backbone_config(PretrainConfig(model="tiny"), len(tokenizer), 48)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        if path[-1] == "scale":
            return np.ones(leaf.shape, np.float32)
        if path[-1] in ("bias", "logit_scale"):
            return np.zeros(leaf.shape, np.float32)
        return rng.normal(0.0, 0.02, leaf.shape).astype(np.float32)

    flat = traverse_util.flatten_dict(abstract_params(bcfg))
    params = traverse_util.unflatten_dict({k: fill(k, v) for k, v in flat.items()})
    return backbone_io.save_backbone(Path(directory) / "tiny", bcfg, params, tokenizer)


def random_clips(k: int, clip_len: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """K uniform random uint8 crop clips [K, clip_len, H, W, 3] of size (H, W)."""
    return np.random.default_rng(seed).integers(0, 256, (k, clip_len, *size, 3), np.uint8)


def generated_lengths(tokens: np.ndarray, eos: int) -> np.ndarray:
    """[B] decoding steps each row of `tokens` [B, max_new_tokens] ran: up to and including
    its first EOS, max_new_tokens where it never wrote one."""
    tokens = np.asarray(tokens)
    hit = tokens == eos
    return np.where(hit.any(1), hit.argmax(1) + 1, tokens.shape[1])


@contextlib.contextmanager
def recorded_dialogues():
    """The tokens [batch, max_new_tokens] of every `Dialogue` turn `CropQA.answers` asks
    inside the block, appended in order to the yielded list."""
    made = []
    original = vqa.Dialogue

    class Recorded(original):
        def ask(self, *args, **kwargs):
            out = super().ask(*args, **kwargs)
            made.append(self.last_tokens)
            return out

    vqa.Dialogue = Recorded
    try:
        yield made
    finally:
        vqa.Dialogue = original


# ----------------------------------------------------------------------------- the splits


def split_clips(reader, split: str, stride: int, batch: int, cfg: Config | None = None
                ) -> dict:
    """The crop clips `jobs.vlavad.answers_of` would make on `split` (the sidecars' exact
    tracks, `vlavad.tracks` "sidecar"), counted without rendering a crop: one per object
    and frame t it is seen with t % stride == stride - 1 (`track_clips`). Batches as the job
    makes them: encode per video (the last one of each padded), answers per category over the
    whole split."""
    job = (cfg or Config()).vlavad
    per_video, per_category = [], Counter()
    names = reader.video_names(split)
    for name in names:
        sidecar = reader.read_sidecar(name)
        tracks = tracks_from_sidecar(sidecar, name, None, job.tracker, job.data_seed)
        categories = track_categories(tracks, sidecar)
        n = 0
        for obj, rows in tracks:
            frames = np.unique(rows[:, 0])
            seen = int(np.sum(frames % stride == stride - 1))
            per_category[categories[int(obj)]] += seen
            n += seen
        per_video.append(n)
    return {"videos": len(names), "clips": sum(per_video),
            "encode_batches": sum(math.ceil(n / batch) for n in per_video),
            "categories": {c: n for c, n in sorted(per_category.items()) if n},
            "answer_batches": sum(math.ceil(n / batch) for n in per_category.values())}


def implied_seconds(split: dict, prompts: int, encode_s_per_batch: float,
                    answer_s_per_batch: float) -> float:
    """Seconds of the stage on a split of `split_clips`' counts: its encode batches and, per
    prompt, its answer batches at the measured seconds per batch."""
    return (split["encode_batches"] * encode_s_per_batch
            + prompts * split["answer_batches"] * answer_s_per_batch)


# ----------------------------------------------------------------------------- the report


def summarize(passes: list[dict], k: int, batch: int, tokens: dict[str, np.ndarray],
              steps: dict[str, np.ndarray]) -> dict:
    """The rows from the timed passes ([{"encode": s, "answers": {prompt: s}}]), the
    generated tokens per answer [K] and the decoding steps per batch of each prompt."""
    batches = math.ceil(k / batch)
    prompts = list(passes[0]["answers"])
    enc = statistics.median(p["encode"] for p in passes)
    out = {"encode": {"seconds": enc, "clips_per_s": k / enc, "batches": batches,
                      "seconds_per_batch": enc / batches}}
    answers = {}
    for prompt in prompts:
        s = statistics.median(p["answers"][prompt] for p in passes)
        n = tokens[prompt]
        answers[prompt] = {
            "seconds": s, "answers_per_s": k / s, "batches": batches,
            "seconds_per_batch": s / batches,
            "tokens_per_answer_mean": float(n.mean()), "tokens_per_answer_max": int(n.max()),
            "tokens": int(n.sum()), "tokens_per_s": float(n.sum()) / s,
            "decode_steps_per_batch_mean": float(np.mean(steps[prompt]))}
    out["answers"] = answers
    mean_s = statistics.mean(a["seconds"] for a in answers.values())
    out["one_prompt"] = {
        "seconds": mean_s, "answers_per_s": k / mean_s,
        "tokens_per_answer_mean": statistics.mean(a["tokens_per_answer_mean"]
                                                  for a in answers.values()),
        "tokens_per_s": sum(a["tokens"] for a in answers.values()) / len(answers) / mean_s}
    train = statistics.median(p["encode"] + sum(p["answers"].values()) for p in passes)
    test = statistics.median(p["encode"] + statistics.mean(p["answers"].values())
                             for p in passes)
    out["stage"] = {
        "train": {"prompts": len(prompts), "seconds": train, "clips_per_s": k / train,
                  "answer_fraction": 1 - enc / train},
        "test": {"prompts": 1, "seconds": test, "clips_per_s": k / test,
                 "answer_fraction": 1 - enc / test}}
    return out


def splits_report(counts: dict | None, rows: dict) -> dict | None:
    """Each split's counts with its implied seconds: the train split asks the whole pool (the
    sum of the prompts' seconds per batch), test one prompt (their mean)."""
    if counts is None:
        return None
    enc = rows["encode"]["seconds_per_batch"]
    per_prompt = [a["seconds_per_batch"] for a in rows["answers"].values()]
    out = {}
    for split, c in counts.items():
        prompts = len(per_prompt) if SPLITS[split] == "train" else 1
        stage = rows["stage"][SPLITS[split]]
        out[split] = {**c, "prompts": prompts,
                      "implied_s": implied_seconds(c, prompts, enc, statistics.mean(per_prompt)),
                      "implied_s_full_batches": c["clips"] / stage["clips_per_s"]}
    out["total_implied_s"] = sum(s["implied_s"] for s in out.values())
    return out


def markdown(report: dict) -> str:
    m, r = report["machine"], report["rows"]
    h, w = report["frame_size"]
    lines = [f"K = {report['clips']} clips of {report['clip_len']} x {h}x{w} px, "
             f"batch {report['batch']}, max_new_tokens {report['max_new_tokens']}; median of "
             f"{report['repeats']} ({m['device_kind']}, {m['threads']} threads, load "
             f"{m['loadavg_before'][0]:.2f} -> {m['loadavg_after'][0]:.2f})", "",
             "| part | seconds | per s | tokens/answer | tokens/s |",
             "|---|---:|---:|---:|---:|",
             f"| encode | {r['encode']['seconds']:.2f} | {r['encode']['clips_per_s']:.1f} clips "
             "| | |"]
    for prompt, a in r["answers"].items():
        lines.append(f"| answers ({prompt}) | {a['seconds']:.2f} | {a['answers_per_s']:.1f} "
                     f"answers | {a['tokens_per_answer_mean']:.1f} | {a['tokens_per_s']:.0f} |")
    for name, s in r["stage"].items():
        lines.append(f"| stage, {name} ({s['prompts']} prompt{'s' * (s['prompts'] > 1)}) | "
                     f"{s['seconds']:.2f} | {s['clips_per_s']:.1f} clips | | |")
    if report["splits"] is None:
        lines += ["", f"splits: {report['splits_note']}"]
    else:
        lines += ["", "| split | videos | clips | encode batches | answer batches | prompts | "
                      "implied s |", "|---|---:|---:|---:|---:|---:|---:|"]
        for split in SPLITS:
            s = report["splits"][split]
            lines.append(f"| {split} | {s['videos']} | {s['clips']} | {s['encode_batches']} | "
                         f"{s['answer_batches']} | {s['prompts']} | {s['implied_s']:.0f} |")
        lines.append(f"| **total** | | | | | | {report['splits']['total_implied_s']:.0f} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def run_pass(qa, clips, prompts, categories) -> tuple[dict, np.ndarray, dict]:
    """Seconds of encode and of each prompt's answers (about the clips just encoded); the
    visual tokens and the answers."""
    start = time.perf_counter()
    visual, _ = qa.encode(clips)
    times, answers = {"encode": time.perf_counter() - start, "answers": {}}, {}
    for prompt in prompts:
        start = time.perf_counter()
        answers[prompt] = qa.answers(visual, categories, prompt)
        times["answers"][prompt] = time.perf_counter() - start
    return times, visual, answers


def split_counts(data: str | None, cfg: Config, batch: int) -> tuple[dict | None, str]:
    """(counts per split or None, a note)."""
    stride = cfg.vlavad.answer_stride
    if data is None:
        if cfg.prepare.layout != "synthetic" or not is_complete(cfg.synth):
            return None, (f"no finished build of the default benchmark at {cfg.synth.out_dir} "
                          "(`tvad data synth` renders it); pass --data DIR")
        data = cfg.prepare_source
    if not Path(data).is_dir():
        return None, f"{data}: not a folder; no split counted"
    reader = make_reader(cfg.prepare.layout, data)
    counts = {split: split_clips(reader, split, stride, batch, cfg) for split in SPLITS}
    return counts, (f"{data}: sidecar tracks, answer_stride {stride}, the job's batches of "
                    f"{batch}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--backbone", default="", help="backbone folder (default: the shipped)")
    which.add_argument("--tiny", action="store_true",
                       help="a random tiny backbone (48 px; the test's size)")
    parser.add_argument("--clips", type=int, default=256, help="K crop clips")
    parser.add_argument("--clip-len", type=int, default=8, help="frames per clip")
    parser.add_argument("--batch", type=int, default=64, help="clips per call (vqa_batch)")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="answer budget")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes after the warm-up")
    parser.add_argument("--data", help="rendered synthetic benchmark whose train_normal and "
                                       "test splits are counted (default: the default "
                                       "config's, if built)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    if min(args.clips, args.clip_len, args.batch, args.max_new_tokens, args.repeats) < 1:
        parser.error("--clips, --clip-len, --batch, --max-new-tokens and --repeats must be "
                     ">= 1")
    wall = time.perf_counter()
    load_before = os.getloadavg()
    cfg = Config()
    prompts = list(cfg.vlavad.prompts)
    with contextlib.ExitStack() as stack:
        path = args.backbone
        if args.tiny:
            path = tiny_backbone(stack.enter_context(tempfile.TemporaryDirectory()))
        backbone = load_frozen_backbone(path)
        model = plain_model(backbone, cfg.tvad.model, cfg.tvad.stage1.view, cfg.tvad.stage2.view)
        qa = vqa.CropQA(model, args.batch, args.max_new_tokens)
        size = backbone.cfg.vision.frame_size
        clips = random_clips(args.clips, args.clip_len, size)
        categories = [CATEGORY] * args.clips
        eos = backbone.cfg.decoder.eos_token_id
        with CompileClock() as compiles:
            compiles.phase = "warmup"
            print("[bench_vqa] warm-up pass", file=sys.stderr)
            start = time.perf_counter()
            with recorded_dialogues() as made:
                first, visual, answers = run_pass(qa, clips, prompts, categories)
            warmup_s = time.perf_counter() - start
            per_prompt = len(made) // len(prompts)
            tokens, steps = {}, {}
            for i, prompt in enumerate(prompts):
                chats = made[i * per_prompt:(i + 1) * per_prompt]
                full = np.concatenate(chats)
                tokens[prompt] = generated_lengths(full[:args.clips], eos)  # the K real rows
                steps[prompt] = np.asarray([generated_lengths(c, eos).max() for c in chats])
            compiles.phase = "timed"
            passes = []
            for i in range(args.repeats):
                print(f"[bench_vqa] timed pass {i + 1}/{args.repeats}", file=sys.stderr)
                passes.append(run_pass(qa, clips, prompts, categories)[0])
    rows = summarize(passes, args.clips, args.batch, tokens, steps)
    counts, note = split_counts(args.data, cfg, args.batch)
    bcfg = backbone.cfg
    report = {
        "benchmark": "VLAVAD (paper 004) VQA stage: crop clips encoded and answered per second",
        "machine": {**_machine.machine_info(), "threads": len(os.sched_getaffinity(0)),
                    "xla_flags": os.environ.get("XLA_FLAGS", ""),
                    "loadavg_before": list(load_before), "loadavg_after": list(os.getloadavg())},
        "backbone": "tiny (random)" if args.tiny else (args.backbone or "shipped"),
        "backbone_digest": backbone.digest,
        "clips": args.clips, "clip_len": args.clip_len, "frame_size": list(size),
        "batch": args.batch, "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
        "category": CATEGORY, "prompts": prompts,
        "sizes": {"vision_width": bcfg.vision.width, "vision_depth": bcfg.vision.depth,
                  "visual_tokens": int(visual.shape[1]), "decoder_width": bcfg.decoder.width,
                  "decoder_depth": bcfg.decoder.depth, "vocab_size": bcfg.decoder.vocab_size,
                  "question_len": qa.question_len},
        "rows": rows,
        "answers_common": {p: Counter(a).most_common(3) for p, a in answers.items()},
        "answers_distinct": {p: len(set(a)) for p, a in answers.items()},
        "splits": splits_report(counts, rows), "splits_note": note,
        "units": {"seconds": "median over the repeats, for all K clips",
                  "clips_per_s / answers_per_s": "K / seconds",
                  "tokens_per_answer_mean": "generated tokens per answer, EOS included "
                                            "(max_new_tokens without EOS)",
                  "tokens_per_s": "the K answers' generated tokens / seconds",
                  "decode_steps_per_batch_mean": "decoding steps per batch (its longest "
                                                 "answer, padding rows included)",
                  "one_prompt": "the pool's mean prompt",
                  "stage": "median over the passes of encode + the prompts' seconds (test: "
                           "the pool's mean prompt); answer_fraction: the decoder's share",
                  "implied_s": "encode_batches x encode seconds per batch + prompts x "
                               "answer_batches x answer seconds per batch (the pool's mean)",
                  "implied_s_full_batches": "clips / the stage's clips_per_s (no padding)"},
        "warmup_s": first | {"total": warmup_s},
        "warmup_compiles": compiles.count["warmup"],
        "warmup_compile_s": compiles.seconds["warmup"],
        "compiles_during_timed_passes": compiles.count["timed"],
        "passes_s": passes,
        "wall_s": round(time.perf_counter() - wall, 1),
    }
    emit(report, args.out, markdown(report))
    return 0


if __name__ == "__main__":
    reexec_with_huge_pages()
    sys.exit(main())
