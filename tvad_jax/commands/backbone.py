"""`tvad backbone import`: Hugging Face checkpoint directories -> a backbone folder that every
command takes with `tvad.backbone=OUT`.

    tvad backbone import QWEN_DIR OUT [--image-size 336 | HxW] [--text-layer 0.5]
                         [--tokenizer DIR]
                         [--chat-template FILE | --no-chat-template]
    tvad backbone import LLAVA_DIR CLIP_DIR OUT [--token-pool 2]
    tvad backbone import CLIP_DIR LLAMA_DIR OUT [--token-pool 2] [--seed 0]

Qwen2.5-VL alone; LLaVA-1.5 with a CLIP directory for the text encoder E_t; CLIP (vision and
text) with a Llama decoder (and a random projector). The sources are told apart by their
config.json. OUT gets config.json, model.safetensors (float16), the decoder's tokenizer with
T-VAD's prompt tokens, and the CLIP tokenizer in text_tokenizer/ where E_t has its own. Every
source is read and checked before OUT is written; OUT appears complete or not at all and must
not exist yet. --image-size: Qwen's frame size, a side or HEIGHTxWIDTH (multiples of 28 for
the real model; its processor keeps a video's aspect: `qwen_vl.smart_resize(480, 856)` gives
476x868, 252x448 is 16:9 at 336 x 336's pixel count; prepare the data at that size);
--text-layer: the decoder layer of Qwen's E_t (a fraction of depth or an index; 0 = the token
embeddings); --token-pool: LLaVA-family visual tokens per tubelet = patches / token_pool^2;
--tokenizer: the decoder's tokenizer from another directory (default: the decoder's own).

The dialogue speaks the tokenizer's chat template where it has one (Qwen2.5-VL-Instruct's
ChatML: system prompt, user and assistant turns around the video, as the checkpoint was
instruction-tuned), else the plain format `<s> question answer </s>`. A template is checked at
import (it must place a video or image item and end answers with the eos); --chat-template
FILE sets it from a processor's chat_template.json (or a .jinja file) where the tokenizer has
none of its own; --no-chat-template saves the tokenizer without one, for the plain format (a
base model, or a template that cannot be read as turns).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from tvad_jax.commands.common import number_at_least, output_dir
from tvad_jax.errors import DataError


def _layer(text: str) -> float | int:
    """A layer as a fraction of depth ("0.5") or an index ("14")."""
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a fraction nor an index") \
            from None


def _frame_size(text: str) -> int | tuple[int, int]:
    """A frame size: a side ("336") or HEIGHTxWIDTH ("252x448")."""
    parts = text.lower().split("x")
    try:
        sides = [int(p) for p in parts]
    except ValueError:
        sides = []
    if len(sides) not in (1, 2) or min(sides) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a side nor HEIGHTxWIDTH")
    return sides[0] if len(sides) == 1 else tuple(sides)


def add_parser(subparsers) -> None:
    """Add the `backbone` command group (`backbone import`)."""
    group = subparsers.add_parser("backbone", help="backbone folders from Hugging Face "
                                  "checkpoints", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = group.add_subparsers(dest="backbone_command", required=True)
    imp = commands.add_parser("import", help="Hugging Face directories -> a backbone folder",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    imp.add_argument("sources", type=Path, nargs="+", metavar="SRC")
    imp.add_argument("out", type=output_dir, metavar="OUT")
    imp.add_argument("--tokenizer", type=Path, default=None,
                     help="the decoder's tokenizer directory (default: the decoder's own)")
    imp.add_argument("--image-size", type=_frame_size, default=336,
                     help="Qwen2.5-VL frame size in pixels, a side or HEIGHTxWIDTH "
                          "(default 336)")
    imp.add_argument("--text-layer", type=_layer, default=0.5,
                     help="Qwen2.5-VL decoder layer of E_t (default 0.5: the middle)")
    imp.add_argument("--token-pool", type=number_at_least(1), default=2,
                     help="LLaVA-family token pooling per side (default 2)")
    imp.add_argument("--seed", type=int, default=0, help="CLIP + Llama: projector init seed")
    chat = imp.add_mutually_exclusive_group()
    chat.add_argument("--chat-template", type=Path, default=None, metavar="FILE",
                      help="the dialogue's chat template: a processor's chat_template.json "
                           "or a .jinja file (default: the tokenizer's own)")
    chat.add_argument("--no-chat-template", action="store_true",
                      help="drop the tokenizer's chat template: plain dialogue turns")
    imp.set_defaults(func=run_import)


def run_import(args) -> int:
    # Imports deferred: the command's heavy modules load only when it runs.
    from tvad_jax.data.dialogues import ChatTemplateError, chat_format, read_chat_template
    from tvad_jax.models import backbone_io
    from tvad_jax.models.backbone_import import decoder_tokenizer, describe, import_backbone

    if args.out.exists():
        raise DataError(args.out, "exists: give a new folder for the backbone")
    template = None if args.chat_template is None else read_chat_template(args.chat_template)
    tokenizer = decoder_tokenizer(args.sources, args.tokenizer)
    if args.no_chat_template or template is not None:
        tokenizer.chat_template = template
    try:
        chat_format(tokenizer)
    except ChatTemplateError as err:
        source = args.chat_template or Path(tokenizer.name_or_path)
        raise DataError(source, f"{err} (import with --no-chat-template for plain dialogue "
                                "turns)") from None
    cfg, params, text_tokenizer = import_backbone(args.sources, tokenizer, args.image_size,
                                                  args.text_layer, args.token_pool, args.seed)
    beside = Path(tokenizer.name_or_path) / "chat_template.json"
    if tokenizer.chat_template is None and not args.no_chat_template and beside.is_file():
        print(f"[tvad] note: the tokenizer has no chat template; {beside} (a processor's) is "
              "not used unless given with --chat-template")
    extra = {"imported_from": [str(p.resolve()) for p in args.sources]}
    out = backbone_io.save_backbone(args.out, cfg, params, tokenizer, extra,
                                    text_tokenizer=text_tokenizer)
    height, width = cfg.vision.frame_size
    print(f"[tvad] backbone: {describe(cfg)}; dialogue in "
          f"{'the chat template' if tokenizer.chat_template else 'plain turns'}")
    print(f"[tvad] backbone folder: {out} (use it with tvad.backbone={out}, on data prepared "
          f"with prepare.height={height} prepare.width={width} prepare.resample=bicubic, "
          "as its processor resamples)")
    return 0
