"""`tvad detect` and `tvad chat`: their arguments, and missing or wrong input (model folder,
video, questions file) failing in one line before a run folder is written.

A real model is never loaded: where a check comes after loading, `load_model` is replaced by
one that returns a stand-in model of the wanted variant."""
from __future__ import annotations

import types

import numpy as np
import pytest

from tvad_jax.data.video_io import write_video
from tvad_jax.models import tvad as tvad_models
from tvad_jax.models.configs import tiny_decoder


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


class _WordTokenizer:
    """One token per word: enough to count question lengths."""

    bos_token_id, eos_token_id, chat_template = 1, 2, None

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": [3] * len(text.split())}


@pytest.fixture
def stand_in_model(monkeypatch, tmp_path):
    """Make `load_model` return a stand-in model (a decoder of 128 positions, a tokenizer of
    one token per word); returns the folder to pass as MODEL_DIR and the stand-in."""
    decoder = tiny_decoder(max_length=128)
    backbone = types.SimpleNamespace(cfg=types.SimpleNamespace(decoder=decoder),
                                     tokenizer=_WordTokenizer())
    model = types.SimpleNamespace(cfg=types.SimpleNamespace(variant="full"), backbone=backbone)
    loaded = []

    def load_model(directory):
        loaded.append(directory)
        return model

    monkeypatch.setattr(tvad_models, "load_model", load_model)
    folder = tmp_path / "model"
    folder.mkdir()
    return types.SimpleNamespace(folder=folder, model=model, loaded=loaded)


def test_detect_with_a_missing_video_writes_nothing(tvad, runs_dir, tmp_path, real_video,
                                                    stand_in_model):
    """A typo in the second video is reported in one line before any run folder."""
    missing = tmp_path / "typo.mp4"
    result = tvad("detect", stand_in_model.folder, real_video, missing, "--runs-root", runs_dir)
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


@pytest.mark.parametrize("argv, message", [
    (("detect", "--max-new-tokens", "-1"), "argument --max-new-tokens: expected an integer >= 1, "
                                           "got -1"),
    (("chat", "--max-turns", "0"), "argument --max-turns: expected an integer >= 1, got 0"),
    (("chat", "--max-new-tokens", "nan"), "argument --max-new-tokens: invalid literal"),
])
def test_numbers_outside_their_domain_are_usage_errors(tvad, capsys, runs_dir, video, argv,
                                                       message):
    """Checked as the arguments are parsed: nothing is loaded, no run folder is made."""
    command, *options = argv
    with pytest.raises(SystemExit) as exit_info:
        tvad(command, runs_dir / "model", video, *options, "--runs-root", runs_dir)
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()      # one line, no usage dump
    assert message in line and f"(see tvad {command} --help)" in line
    assert list(runs_dir.rglob("*")) == []


@pytest.mark.parametrize("command", ["detect", "chat"])
@pytest.mark.parametrize("below", ["", "sub"])
def test_runs_root_that_is_a_file_is_a_usage_error(tvad, capsys, tmp_path, video, command,
                                                   below):
    """`--runs-root` naming a file (or a folder inside one) fails before the model loads."""
    blocker = tmp_path / "runs"
    blocker.write_text("a file")
    with pytest.raises(SystemExit) as exit_info:
        tvad(command, tmp_path / "model", video, "--runs-root", blocker / below)
    assert exit_info.value.code == 2
    assert f"{blocker}: exists and is not a folder" in capsys.readouterr().err
    assert blocker.read_text() == "a file"


@pytest.mark.parametrize("command", ["detect", "chat"])
def test_answer_budget_past_the_decoders_context_is_refused_at_once(tvad, runs_dir, video,
                                                                    stand_in_model, command):
    """`--max-new-tokens 2048` on a 128-position decoder: one line naming the limit, before
    the video is read (it would otherwise generate for minutes)."""
    result = tvad(command, stand_in_model.folder, video, "--max-new-tokens", 2048,
                  "--runs-root", runs_dir)
    result.failed_with("max_new_tokens 2048", "decoder's context of 128 tokens",
                       "new tokens")
    assert list(runs_dir.rglob("*")) == []


@pytest.fixture
def real_video(tmp_path):
    """A decodable 4-frame video."""
    return write_video(tmp_path / "real.mp4", np.zeros((4, 16, 16, 3), np.uint8))


@pytest.mark.parametrize("content, fragment", [
    (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "binary file, expected UTF-8 text"),
    (b"What happened?\n\xff\xfe odd bytes\n", "not UTF-8 text"),
    ("\n".join(f"Question {i}?" for i in range(9)).encode(), "9 questions, more than the 8 turns"),
    (("Short?\n" + "why " * 70 + "\n").encode(), "line 2: a question of 71 tokens; at most 64"),
])
def test_bad_questions_file_fails_before_the_video_is_read(tvad, runs_dir, tmp_path, real_video,
                                                          stand_in_model, content, fragment):
    """A binary, non-UTF-8 or over-long questions file is named in one line (with the line
    where there is one) before any output; the stand-in model could not even read a video."""
    questions = tmp_path / "questions.txt"
    questions.write_bytes(content)
    result = tvad("chat", stand_in_model.folder, real_video, "--questions", questions,
                  "--runs-root", runs_dir)
    result.failed_with(f"{questions}: {fragment}")
    assert list(runs_dir.rglob("*")) == []


@pytest.mark.parametrize("bad_bytes, fragment", [
    (b"\x89PNG\r\n\x1a\n" + bytes(64), "corrupt or truncated video"),
    (b"", "corrupt or truncated video"),
])
def test_detect_checks_every_video_before_its_run_folder(tvad, runs_dir, tmp_path, real_video,
                                                         stand_in_model, bad_bytes, fragment):
    """The second video is unreadable: it is named in one line and no run folder (and so no
    empty or partial detections.jsonl) is made."""
    bad = tmp_path / "second.mp4"
    bad.write_bytes(bad_bytes)
    result = tvad("detect", stand_in_model.folder, real_video, bad, "--runs-root", runs_dir)
    result.failed_with(f"{bad}: ")
    assert list(runs_dir.rglob("*")) == []


def test_typed_question_too_long_for_a_turn_is_asked_again(monkeypatch, capsys):
    """At the chat prompt a question the turn cannot hold is refused with the reason and the
    user is asked again; EOF ends the dialogue."""
    from tvad_jax.commands.infer import _prompt_user
    typed = iter(["a b c d e", "short"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(typed))

    def problem(question):
        return "a question of 5 words; at most 3 fit" if len(question.split()) > 3 else None

    assert _prompt_user(problem) == "short"
    assert "a question of 5 words; at most 3 fit: ask a shorter one" in capsys.readouterr().err
    monkeypatch.setattr("builtins.input", lambda prompt: (_ for _ in ()).throw(EOFError))
    with pytest.raises(StopIteration):
        _prompt_user(problem)
