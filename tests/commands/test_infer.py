"""`tvad detect` and `tvad chat`: their arguments, and missing or wrong input (model folder,
video, questions file) failing in one line before a run folder is written.

A real model is never loaded: where a check comes after loading, `load_model` is replaced by
one that returns a stand-in model of the wanted variant."""
from __future__ import annotations

import types

import pytest

from tvad_jax.models import tvad as tvad_models


def test_detect_help_names_the_arguments(tvad_help):
    text = tvad_help("detect")
    for name in ("MODEL_DIR", "VIDEO", "--no-overlay", "--max-new-tokens", "--runs-root"):
        assert name in text


def test_chat_help_names_the_arguments(tvad_help):
    text = tvad_help("chat")
    for name in ("MODEL_DIR", "VIDEO", "--questions", "--max-new-tokens", "--max-turns",
                 "--runs-root"):
        assert name in text


def test_detect_needs_a_video(tvad, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        tvad("detect", tmp_path)
    assert exit_info.value.code == 2
    assert "VIDEO" in capsys.readouterr().err


@pytest.fixture
def video(tmp_path):
    """A file standing in for a video (never decoded: every test fails before)."""
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"not decoded")
    return path


@pytest.mark.parametrize("command", ["detect", "chat"])
def test_missing_model_folder_fails_in_one_line(tvad, runs_dir, tmp_path, video, command):
    missing = tmp_path / "no-such-run" / "model"
    result = tvad(command, missing, video, "--runs-root", runs_dir)
    result.failed_with(f"{missing}: not a T-VAD model folder")
    assert list(runs_dir.rglob("*")) == []


@pytest.mark.parametrize("command", ["detect", "chat"])
def test_folder_that_is_not_a_model_fails_in_one_line(tvad, runs_dir, tmp_path, video,
                                                      command):
    """An existing folder without the model's metadata (e.g. the run folder instead of its
    `model/`) is named in one line."""
    run_folder = tmp_path / "tvad-full-run"
    run_folder.mkdir()
    result = tvad(command, run_folder, video, "--runs-root", runs_dir)
    result.failed_with(f"{run_folder}: not a T-VAD model folder")
    assert list(runs_dir.rglob("*")) == []


@pytest.fixture
def stand_in_model(monkeypatch, tmp_path):
    """Make `load_model` return a stand-in model; returns the folder to pass as MODEL_DIR and
    the setter of the stand-in's variant."""
    model = types.SimpleNamespace(cfg=types.SimpleNamespace(variant="full"))
    loaded = []

    def load_model(directory):
        loaded.append(directory)
        return model

    monkeypatch.setattr(tvad_models, "load_model", load_model)
    folder = tmp_path / "model"
    folder.mkdir()
    return types.SimpleNamespace(folder=folder, model=model, loaded=loaded)


def test_detect_with_a_missing_video_writes_nothing(tvad, runs_dir, tmp_path, video,
                                                    stand_in_model):
    """A typo in the second video is reported in one line before any run folder."""
    missing = tmp_path / "typo.mp4"
    result = tvad("detect", stand_in_model.folder, video, missing, "--runs-root", runs_dir)
    result.failed_with(f"{missing}: video file not found")
    assert stand_in_model.loaded == [stand_in_model.folder]
    assert list(runs_dir.rglob("*")) == []


def test_chat_with_a_missing_video_writes_nothing(tvad, runs_dir, tmp_path, stand_in_model):
    missing = tmp_path / "typo.mp4"
    result = tvad("chat", stand_in_model.folder, missing, "--runs-root", runs_dir)
    result.failed_with(f"{missing}: video file not found")
    assert list(runs_dir.rglob("*")) == []


def test_chat_with_a_missing_questions_file_writes_nothing(tvad, runs_dir, tmp_path, video,
                                                           stand_in_model):
    missing = tmp_path / "questions.txt"
    result = tvad("chat", stand_in_model.folder, video, "--questions", missing,
                  "--runs-root", runs_dir)
    result.failed_with(f"{missing}: questions file not found")
    assert list(runs_dir.rglob("*")) == []


def test_chat_with_a_model_without_dialogue_writes_nothing(tvad, runs_dir, video,
                                                           stand_in_model):
    """A `no_rae` model (heatmaps only) cannot chat: one line naming the model folder."""
    stand_in_model.model.cfg.variant = "no_rae"
    result = tvad("chat", stand_in_model.folder, video, "--runs-root", runs_dir)
    result.failed_with(str(stand_in_model.folder), "no dialogue")
    assert list(runs_dir.rglob("*")) == []
