"""Feature cache, dialogue token arrays and clip -> frame scattering of the T-VAD stages."""
import json

import numpy as np
import pytest

from tvad_jax.data.dialogues import dialogue_arrays
from tvad_jax.data.pipeline import scatter_clips
from tvad_jax.errors import DataError
from tvad_jax.infer.features import FeatureCache, build_cache, make_encoder
from tvad_jax.models.backbone_io import load_backbone
from tvad_jax.models.tokenizer import train_tokenizer
from tvad_jax.models.tvad import ClipView


def test_scatter_clips_averages_overlaps_and_drops_padding():
    # 2 clips of 2 tubelets (4 frames) with stride 2 over a 5-frame video, then a padded clip
    values = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    out = scatter_clips(values, np.zeros(3, int), np.array([0, 2, 4]), [5])[0]
    # frame: 0 1 2 3 4 ; clip0 covers 0-3 (1,1,2,2), clip1 2-5 (3,3,4,[4]), clip2 4-7 (5,..)
    np.testing.assert_allclose(out, [1, 1, (2 + 3) / 2, (2 + 3) / 2, (4 + 5) / 2])
    with pytest.raises(ValueError, match="in no clip"):   # frame 4 of 5 is never covered
        scatter_clips(np.array([[1.0, 2.0]]), np.zeros(1, int), np.array([0]), [5])


def test_scatter_clips_frame_step_and_max():
    out = scatter_clips(np.array([[1.0, 2.0], [7.0, 0.0]]), np.zeros(2, int),
                        np.array([0, 1]), [8], tubelet=2, frame_step=2, reduce="max")[0]
    # clip 0: frames 0,2 -> 1 ; 4,6 -> 2 ; clip 1: frames 1,3 -> 7 ; 5,7 -> 0
    np.testing.assert_allclose(out, [1, 7, 1, 7, 2, 0, 2, 0])


def test_dialogue_arrays_put_the_loss_on_answers_only():
    tok = train_tokenizer(["Is there any anomaly?", "Yes.", "What moves?", "A red car."] * 4,
                          vocab_size=300)
    turns = [{"question": "Is there any anomaly?", "answers": ["Yes.", "Yes, there is."]},
             {"question": "What moves?", "answers": ["A red car."]}]
    ids, targets, n = dialogue_arrays(tok, turns, 64)
    expected, answer_positions, turn_ends = [], [], []
    for turn in turns:
        q = [tok.bos_token_id, *tok(turn["question"])["input_ids"]]
        a = [*tok(" " + turn["answers"][0])["input_ids"], tok.eos_token_id]
        answer_positions += list(range(len(expected) + len(q), len(expected) + len(q) + len(a)))
        expected += q + a
        turn_ends.append(len(expected))
    assert n == len(expected) and ids[:n].tolist() == expected
    assert (ids[n:] == tok.pad_token_id).all()
    scored = [i + 1 for i in np.flatnonzero(targets >= 0)]     # positions being predicted
    assert scored == answer_positions
    assert all(targets[i - 1] == ids[i] for i in scored)
    short_ids, _, short_n = dialogue_arrays(tok, turns, n - 1)  # the second turn does not fit
    assert short_n == turn_ends[0]
    assert short_ids[:short_n].tolist() == expected[:short_n]


def test_feature_cache_hit_skips_the_backbone(tiny_backbone, tmp_path):
    cfg, directory = tiny_backbone
    bcfg, params, _ = load_backbone(directory)
    encoder = make_encoder(bcfg, params)
    calls = []

    def counting(frames):
        calls.append(len(frames))
        return encoder(frames)

    view = ClipView(clip_len=8, clip_stride=8)
    args = (bcfg, params, cfg.prepared_dir, "val", view, tmp_path, "digest-a")
    cache = build_cache(*args, batch_size=4, encoder=counting, report=lambda m: None)
    assert calls and len(cache) == sum(cache.meta["lengths"]) // 8
    row = cache[0]
    tubelets = 4
    assert row["hidden"].shape == (len(bcfg.vision.layer_indices), tubelets,
                                   1 + (48 // 12) ** 2, bcfg.vision.width)
    assert row["hidden"].dtype == np.float16 and row["tubelet_masks"].shape == (4, 48, 48)
    # the cached features are the encoder's output for that clip
    from tvad_jax.data.pipeline import LoaderConfig, make_dataset, open_split

    source, lengths = open_split(cfg.prepared_dir, "val")
    first = next(iter(make_dataset(source, lengths, LoaderConfig(
        clip_len=8, clip_stride=8, batch_size=1, shuffle=False, num_epochs=1))))
    np.testing.assert_allclose(np.asarray(encoder(first["frames"])[0])[0].astype(np.float32),
                               row["hidden"].astype(np.float32), atol=2e-3)   # float16

    calls.clear()
    again = build_cache(*args, encoder=counting, report=lambda m: None)
    assert calls == [] and again.directory == cache.directory
    # any change of checkpoint, view or layers gives another cache
    other = build_cache(bcfg, params, cfg.prepared_dir, "val", ClipView(8, 4), tmp_path,
                        "digest-a", encoder=counting, report=lambda m: None)
    assert calls and other.directory != cache.directory
    moved = build_cache(*args[:-1], "digest-b", encoder=counting, report=lambda m: None)
    assert moved.directory != cache.directory


def test_an_interrupted_cache_build_is_never_read(tiny_backbone, tmp_path):
    cfg, directory = tiny_backbone
    bcfg, params, _ = load_backbone(directory)

    def crash(frames):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_cache(bcfg, params, cfg.prepared_dir, "val", ClipView(8, 8), tmp_path, "d",
                    encoder=crash, report=lambda m: None)
    assert [p.name.startswith("incomplete-") for p in tmp_path.iterdir()] == [True]
    with pytest.raises(DataError, match="not a feature cache"):
        FeatureCache(next(tmp_path.iterdir()))
    cache = build_cache(bcfg, params, cfg.prepared_dir, "val", ClipView(8, 8), tmp_path, "d",
                        report=lambda m: None)
    assert json.loads((cache.directory / "meta.json").read_text())["clips"] == len(cache)
