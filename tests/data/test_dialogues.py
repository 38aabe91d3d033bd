"""Stage-2 dialogue token arrays: the loss on answer tokens only, whole turns that fit; the
chat format cut from a tokenizer's template against the template's own render."""
import json

import numpy as np
import pytest
from byte_tokenizers import CHATML, VIDEO, byte_tokenizer, chatml_tokenizer

from tvad_jax.data.dialogues import (ChatTemplateError, chat_format, dialogue_arrays,
                                     dialogue_texts, question_length, read_chat_template,
                                     turn_tokens)
from tvad_jax.errors import DataError
from tvad_jax.models.tokenizer import train_tokenizer

TURNS = [{"type": "judgment", "question": "Is there any anomaly?",
          "answers": ["Yes.", "Yes, there is."]},
         {"type": "target", "question": "What moves?", "answers": ["A red car."]}]


def _user(text, video=False):
    return {"role": "user", "content": [*([{"type": "video"}] if video else []),
                                        {"type": "text", "text": text}]}


def _assistant(text):
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_dialogue_arrays_put_the_loss_on_answers_only():
    tok = train_tokenizer(["Is there any anomaly?", "Yes.", "What moves?", "A red car."] * 4,
                          vocab_size=300)
    ids, targets, weights, n, kept = dialogue_arrays(tok, TURNS, 64, {"judgment": 5.0})
    expected, answer_positions, turn_ends = [], [], []
    for turn in TURNS:
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
    # the judgment's answer tokens weigh 5, the other answer's 1, everything else 0
    first_reply = len(tok(" " + TURNS[0]["answers"][0])["input_ids"]) + 1
    expected_weights = np.zeros(64, np.float32)
    expected_weights[[i - 1 for i in scored]] = [5.0] * first_reply + [1.0] * (
        len(scored) - first_reply)
    np.testing.assert_array_equal(weights, expected_weights)
    assert kept == 2
    short_ids, _, _, short_n, kept = dialogue_arrays(tok, TURNS, n - 1)   # the second turn
    assert (short_n, kept) == (turn_ends[0], 1)                            # does not fit
    assert short_ids[:short_n].tolist() == expected[:short_n]
    texts, left_out = dialogue_texts(tok, [{"dialogue": TURNS}] * 3, "dialogue", n - 1)
    assert left_out == 3 and texts["lengths"].tolist() == [short_n] * 3
    assert chat_format(tok).prefix == ()       # no template: nothing before the visual block
    # turn types the weights do not name at other_weight: here the judgment's answer alone
    _, _, judgment_only, _, _ = dialogue_arrays(tok, TURNS, 64, {"judgment": 5.0}, 0.0)
    np.testing.assert_array_equal(judgment_only, np.where(weights == 5.0, 5.0, 0.0))
    assert (judgment_only > 0).sum() == first_reply


def test_a_chat_templates_dialogue_is_its_own_render():
    """prefix + the video placeholder + the dialogue's ids == the ids of the template's render
    of the same conversation (up to the final newline); the loss falls on each answer and its
    <|im_end|>."""
    tok = chatml_tokenizer()
    fmt = chat_format(tok)
    ids, targets, _, n, _ = dialogue_arrays(tok, TURNS, 200)
    ours = [*fmt.prefix, *_ids(tok, VIDEO), *ids[:n].tolist()]
    conversation = [_user(TURNS[0]["question"], video=True), _assistant("Yes."),
                    _user(TURNS[1]["question"]), _assistant("A red car.")]
    render = tok.apply_chat_template(conversation, tokenize=False)
    assert ours + _ids(tok, "\n") == _ids(tok, render)
    scored = np.flatnonzero(targets >= 0) + 1
    assert tok.decode(ids[scored]) == "Yes.<|im_end|>A red car.<|im_end|>"
    assert tok.decode(list(fmt.closing)) == "<|im_end|>\n<|im_start|>assistant\n"
    # later turns are longer than the first (their opening ends the previous answer's line)
    q = TURNS[1]["question"]
    assert question_length(tok, q) == len(turn_tokens(tok, q, None, first=False)[0]) == \
        len(turn_tokens(tok, q, None)[0]) + len(fmt.later_opening)


def test_a_second_video_in_a_later_turn_follows_the_template():
    """The one-shot layout: the example's turns, then `video_opening`, the test video and its
    first question, as the template writes a user turn with a second video."""
    tok = chatml_tokenizer()
    fmt = chat_format(tok)
    example, _, _, n, _ = dialogue_arrays(tok, TURNS[:1], 100)
    prompt, _ = turn_tokens(tok, TURNS[1]["question"], None)
    ours = [*fmt.prefix, *_ids(tok, VIDEO), *example[:n].tolist(), *fmt.video_opening,
            *_ids(tok, VIDEO), *prompt]
    render = tok.apply_chat_template(
        [_user(TURNS[0]["question"], video=True), _assistant("Yes."),
         _user(TURNS[1]["question"], video=True)], tokenize=False, add_generation_prompt=True)
    assert ours == _ids(tok, render)


def test_templates_the_format_cannot_express_are_refused_by_name():
    no_video = chatml_tokenizer(CHATML.replace(VIDEO, ""))
    with pytest.raises(ChatTemplateError, match="nothing for a video or an image"):
        chat_format(no_video)
    with pytest.raises(ChatTemplateError, match="not with the tokenizer's eos"):
        chat_format(chatml_tokenizer(eos="<|endoftext|>"))
    broken = chatml_tokenizer("{{ messages[0].nothing.more }}")
    with pytest.raises(ChatTemplateError, match="fails on a video dialogue"):
        chat_format(broken)


def test_a_tokenizer_that_adds_bos_itself_gets_one_bos_a_turn():
    """A Llama-like tokenizer writes `<s>` before every text it encodes: a plain turn is
    still `<s> question` and ` answer </s>`, one `<s>` each."""
    tok = byte_tokenizer(["<s>", "</s>"], ends=("<s>", None), bos_token="<s>", eos_token="</s>")
    assert tok("Hi")["input_ids"][0] == tok.bos_token_id          # it does add one
    prompt, reply = turn_tokens(tok, "Why?", "Because.")
    assert prompt == [tok.bos_token_id, *_ids(tok, "Why?")]
    assert reply == [*_ids(tok, " Because."), tok.eos_token_id]


def test_chat_template_files_are_read_or_refused_by_name(tmp_path):
    jinja, processor = tmp_path / "chat_template.jinja", tmp_path / "chat_template.json"
    jinja.write_text(CHATML)
    processor.write_text(json.dumps({"chat_template": CHATML}))
    assert read_chat_template(jinja) == read_chat_template(processor) == CHATML
    for path, text, problem in [(jinja, " \n", "an empty chat template"),
                                (processor, "[1, 2]", '{"chat_template"'),
                                (processor, "{", "not valid JSON")]:
        path.write_text(text)
        with pytest.raises(DataError, match=problem) as err:
            read_chat_template(path)
        assert str(path) in str(err.value)
