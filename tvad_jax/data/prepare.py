"""`tvad data prepare`: readers -> TFDS ArrayRecord shards (+ text annotations)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from tvad_jax import config as config_lib
from tvad_jax.data.annotate import annotate_video
from tvad_jax.data.readers import make_reader
from tvad_jax.data.tfds_builders import TvadVideos
from tvad_jax.errors import DataError, InputError


def reader_options(cfg) -> dict:
    """Reader keyword arguments from a PrepareConfig."""
    options = {}
    if cfg.prepare.split_files:
        options["split_files"] = parse_split_files(cfg.prepare.split_files)
    if cfg.prepare.tracks_dir:
        options["tracks_dir"] = cfg.prepare.tracks_dir
    return options


def parse_split_files(spec: str) -> dict[str, list[str]]:
    """'train=a.txt+b.txt;test=c.txt' -> {'train': ['a.txt', 'b.txt'], 'test': ['c.txt']}."""
    out = {}
    for part in filter(None, spec.split(";")):
        split, sep, files = part.partition("=")
        if not sep or not files:
            raise ValueError(f"prepare.split_files: {part!r} is not split=file[+file...]")
        out[split.strip()] = [f.strip() for f in files.split("+")]
    return out


def prepare(cfg, report=print) -> Path:
    """Write shards for every split of `cfg.prepare` and return the builder folder."""
    source = cfg.prepare_source
    if not Path(source).is_dir():
        raise DataError(source, "dataset root not found (run `tvad data synth` first for the "
                                "synthetic benchmark)")
    builder = TvadVideos(layout=cfg.prepare.layout, source=source, height=cfg.prepare.height,
                         width=cfg.prepare.width, splits=cfg.prepare.splits,
                         skip_bad=cfg.prepare.skip_bad, reader_options=reader_options(cfg),
                         report=report, data_dir=cfg.prepared_dir)
    builder.download_and_prepare()
    out = Path(builder.data_dir)
    config_lib.save(cfg, out / "config.json")
    if cfg.prepare.annotate:
        write_annotations(cfg, out / "annotations", report)
    return out


def write_annotations(cfg, out_dir: Path, report=print) -> None:
    """One JSONL per split: narratives + anomaly dialogue of each video (synthetic only; read
    from the sidecars and annotation maps, without decoding the videos again)."""
    if cfg.prepare.layout != "synthetic":
        report("[tvad] text annotations need per-frame instance records; the real layouts "
               "have none here, so none were written")
        return
    reader = make_reader(cfg.prepare.layout, cfg.prepare_source, **reader_options(cfg))
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in cfg.prepare.splits:
        path = out_dir / f"{split}.jsonl"
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        with tmp.open("w") as stream:
            for name in reader.video_names(split):
                try:
                    sidecar = reader.read_sidecar(name)
                    shape = (sidecar["num_frames"], sidecar["height"], sidecar["width"])
                    _, masks, _ = reader.read_ground_truth(name, shape)
                except InputError as err:
                    if not cfg.prepare.skip_bad:
                        raise
                    report(f"[tvad] skipping bad video: {err}")
                    continue
                stream.write(json.dumps(annotate_video(sidecar, masks)) + "\n")
        tmp.replace(path)
