"""Stage-2 dialogue token arrays: the loss on answer tokens only, whole turns that fit."""
import numpy as np

from tvad_jax.data.dialogues import dialogue_arrays
from tvad_jax.models.tokenizer import train_tokenizer


def test_dialogue_arrays_put_the_loss_on_answers_only():
    tok = train_tokenizer(["Is there any anomaly?", "Yes.", "What moves?", "A red car."] * 4,
                          vocab_size=300)
    turns = [{"type": "judgment", "question": "Is there any anomaly?",
              "answers": ["Yes.", "Yes, there is."]},
             {"type": "target", "question": "What moves?", "answers": ["A red car."]}]
    ids, targets, weights, n = dialogue_arrays(tok, turns, 64, {"judgment": 5.0})
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
    # the judgment's answer tokens weigh 5, the other answer's 1, everything else 0
    first_reply = len(tok(" " + turns[0]["answers"][0])["input_ids"]) + 1
    expected_weights = np.zeros(64, np.float32)
    expected_weights[[i - 1 for i in scored]] = [5.0] * first_reply + [1.0] * (
        len(scored) - first_reply)
    np.testing.assert_array_equal(weights, expected_weights)
    short_ids, _, _, short_n = dialogue_arrays(tok, turns, n - 1)  # the second turn does not fit
    assert short_n == turn_ends[0]
    assert short_ids[:short_n].tolist() == expected[:short_n]
