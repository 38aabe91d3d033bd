"""`tvad data prepare`: readers -> TFDS ArrayRecord shards (+ text annotations)."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path

from tvad_jax import config as config_lib
from tvad_jax.data.annotate import annotate_video
from tvad_jax.data.files import check_output_dir
from tvad_jax.data.readers import reader_options, source_reader
from tvad_jax.data.tfds_builders import INCOMPLETE_PREFIX, TvadVideos
from tvad_jax.errors import DataError, InputError


def prepare(cfg, report=print) -> Path:
    """Write shards for every split of `cfg.prepare` and return the builder folder.

    The shards are keyed by `source_fingerprint`, so a changed source file or option builds
    new ones; only one prepare writes into a folder at a time, and it removes what killed
    runs left and the shards its new build supersedes."""
    source = cfg.prepare_source
    if not Path(source).is_dir():
        raise DataError(source, "dataset root not found (run `tvad data synth` first for the "
                                "synthetic benchmark)")
    options = reader_options(cfg)
    with _exclusive(check_output_dir(cfg.prepared_dir)):
        builder = TvadVideos(layout=cfg.prepare.layout, source=source, height=cfg.prepare.height,
                             width=cfg.prepare.width, splits=cfg.prepare.splits,
                             fingerprint=source_fingerprint(cfg, options),
                             resample=cfg.prepare.resample, skip_bad=cfg.prepare.skip_bad,
                             reader_options=options, report=report,
                             data_dir=cfg.prepared_dir)
        builders_root = Path(cfg.prepared_dir) / TvadVideos.name
        out = Path(builder.data_dir)
        _remove([*builders_root.glob(f"*/{INCOMPLETE_PREFIX}*"),
                 *out.glob("annotations/.*.tmp*")], report, "what a killed prepare left")
        builder.download_and_prepare()
        _remove((p for p in builders_root.iterdir() if p.is_dir() and p != out.parent),
                report, "superseded shards")
        config_lib.save(cfg, out / "config.json")
        if cfg.prepare.annotate:
            write_annotations(cfg, out / "annotations", report)
    return out


def source_fingerprint(cfg, options: dict) -> str:
    """A digest of the options and of the name, size and modification time of every source
    file (the dataset root, split lists, tracks folder; the prepared folder left out)."""
    digest = hashlib.sha256(json.dumps(
        [cfg.prepare.layout, cfg.prepare.height, cfg.prepare.width, cfg.prepare.resample,
         list(cfg.prepare.splits), cfg.prepare.skip_bad, options],
        sort_keys=True, default=str).encode())
    roots = [cfg.prepare_source, options.get("tracks_dir", ""),
             *(f for files in options.get("split_files", {}).values() for f in files)]
    for path in _source_files([Path(r).resolve() for r in roots if r],
                              Path(cfg.prepared_dir).resolve()):
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


def _source_files(roots: list[Path], skip: Path) -> list[Path]:
    """Every visible file under `roots` (files or folders), sorted, none under `skip`."""
    found = set()
    for root in roots:
        if root.is_file():
            found.add(root)
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".") and Path(folder, d) != skip]
            found.update(Path(folder, f) for f in files if not f.startswith("."))
    return sorted(found)


@contextlib.contextmanager
def _exclusive(prepared_dir: Path):
    """Hold the prepared folder's lock (released by the OS if the process dies), so that
    leftovers found while holding it belong to no live run."""
    prepared_dir.mkdir(parents=True, exist_ok=True)
    with (prepared_dir / ".prepare.lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(prepared_dir, "another `tvad data prepare` is writing here") \
                from None
        yield


def _remove(paths, report, what: str) -> None:
    for path in sorted(paths):
        report(f"[tvad] removing {what}: {path}")
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def write_annotations(cfg, out_dir: Path, report=print) -> None:
    """One JSONL per split: narratives + anomaly dialogue of each video (synthetic only; read
    from the sidecars and annotation maps, without decoding the videos again)."""
    if cfg.prepare.layout != "synthetic":
        report("[tvad] text annotations need per-frame instance records; the real layouts "
               "have none here, so none were written")
        return
    reader = source_reader(cfg)
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
