"""BLEU-4 against hand-computed n-gram precisions; Yes/No accuracy; runs; JSON files."""
import json
import math

import numpy as np
import pytest

from tvad_jax.errors import EvalInputError
from tvad_jax.eval import text_metrics as tm

REF = "the cat sat on the mat"
LONG = "the cat sat on the mat today"  # 7 words: p1..p4 = 6/7, 5/6, 4/5, 3/4, no brevity penalty


def bleu(precisions, brevity=1.0):
    return 100 * brevity * math.exp(sum(math.log(p) for p in precisions) / 4)


def test_sentence_bleu_hand_computed():
    assert tm.sentence_bleu4(LONG, [REF]) == pytest.approx(bleu([6 / 7, 5 / 6, 4 / 5, 3 / 4]))
    # Exact prefix of 5 words: every precision 1, brevity penalty exp(1 - 6/5).
    assert tm.sentence_bleu4("the cat sat on the", [REF]) == pytest.approx(
        bleu([1, 1, 1, 1], math.exp(1 - 6 / 5)))


def test_corpus_bleu_pools_counts():
    # Counts add over sentences: p1 = 12/13, p2 = 10/11, p3 = 8/9, p4 = 6/7; 13 vs 12 words.
    expected = bleu([12 / 13, 10 / 11, 8 / 9, 6 / 7])
    assert tm.corpus_bleu4([REF, LONG], [[REF], [REF]]) == pytest.approx(expected)
    # A second reference for only one sentence is allowed.
    assert tm.corpus_bleu4([REF, LONG], [[REF, "a dog"], [REF]]) == pytest.approx(expected)


def test_best_reference_then_macro_average():
    assert tm.best_reference_bleu4(LONG, ["a dog runs away fast", REF]) == pytest.approx(
        bleu([6 / 7, 5 / 6, 4 / 5, 3 / 4]))
    macro = tm.macro_bleu4([REF, LONG], [["a dog runs", REF], [REF]])
    assert macro == pytest.approx((100 + bleu([6 / 7, 5 / 6, 4 / 5, 3 / 4])) / 2)


@pytest.mark.parametrize("text, expected", [
    ("Yes.", "yes"), ("YES, a person is running.", "yes"), ("No", "no"),
    ("There is no anomaly.", "no"), ("The answer is yes", "yes"), ("Nope!", "no"),
    ("Maybe", None), ("", None),
])
def test_normalize_yes_no(text, expected):
    assert tm.normalize_yes_no(text) == expected


def test_yes_no_accuracy_and_balanced_accuracy():
    scores = tm.yes_no_scores(["Yes.", "yes it is", "No", "no", "maybe"],
                              ["yes", "yes", "yes", "no", "no"])
    # 3 of 5 right; TPR 2/3, TNR 1/2 ("maybe" counts as wrong).
    assert scores == {"accuracy": 0.6, "balanced_accuracy": pytest.approx((2 / 3 + 1 / 2) / 2),
                      "unparsed": 1, "num_videos": 5,
                      "confusion": {"yes_as_yes": 2, "yes_as_no": 1, "yes_as_unparsed": 0,
                                    "no_as_yes": 0, "no_as_no": 1, "no_as_unparsed": 1}}
    # One class only: balanced accuracy is its recall.
    assert tm.yes_no_scores(["yes", "no"], ["yes", "yes"])["balanced_accuracy"] == 0.5
    with pytest.raises(EvalInputError, match="neither yes nor no"):
        tm.yes_no_scores(["yes"], ["perhaps"])


def test_mean_std():
    assert tm.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert tm.mean_std([4.0]) == (4.0, 0.0)


REFERENCES = {
    "v1": {"target": [REF, "a dog"], "trajectory": "walks from left to right", "yes_no": "Yes"},
    "v2": {"target": REF, "trajectory": "stands still near the door", "yes_no": "No"},
}


def test_text_scores_per_answer_type():
    predictions = {
        "v1": {"target": REF, "trajectory": "walks from left to right", "yes_no": "Yes."},
        "v2": {"target": LONG, "trajectory": "stands still near the door", "yes_no": "Yes"},
    }
    scores = tm.text_scores(predictions, REFERENCES)
    assert set(scores) == {"target", "trajectory", "yes_no"}
    assert scores["target"]["bleu4"] == pytest.approx((100 + bleu([6 / 7, 5 / 6, 4 / 5, 3 / 4]))
                                                      / 2)
    assert scores["trajectory"]["bleu4"] == pytest.approx(100.0)
    assert scores["yes_no"]["accuracy"] == 0.5
    assert scores["yes_no"]["balanced_accuracy"] == 0.5
    with pytest.raises(EvalInputError, match="no 'trajectory' prediction for video 'v2'"):
        tm.text_scores({"v1": predictions["v1"], "v2": {"target": "x", "yes_no": "no"}},
                       REFERENCES)


def test_runs_from_files_mean_and_std(tmp_path):
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps(REFERENCES))
    paths = []
    for seed, answers in enumerate([{"v1": "Yes", "v2": "No"}, {"v1": "Yes", "v2": "Yes"}]):
        path = tmp_path / f"pred_{seed}.json"
        path.write_text(json.dumps({v: {"target": REF, "trajectory": "walks", "yes_no": a}
                                    for v, a in answers.items()}))
        paths.append(path)
    summary = tm.text_scores_from_files(paths, refs)
    # Accuracy 1.0 in the first run, 0.5 in the second.
    assert summary["yes_no"]["accuracy"] == 0.75
    assert summary["yes_no"]["accuracy_std"] == pytest.approx(np.std([1.0, 0.5], ddof=1))
    assert summary["yes_no"]["num_runs"] == 2
    assert summary["target"]["bleu4"] == pytest.approx(100.0)
    assert summary["target"]["bleu4_std"] == 0.0

    bad = tmp_path / "bad.json"
    bad.write_text('{"v1": {"target": "x",\n  "yes_no": }}')
    with pytest.raises(EvalInputError, match=r"bad\.json:2: invalid JSON"):
        tm.text_scores_from_files([bad], refs)
    bad.write_text(json.dumps({"v1": {"target": ["x"]}}))
    with pytest.raises(EvalInputError, match=r"bad\.json: video 'v1', 'target': expected text"):
        tm.text_scores_from_files([bad], refs)
    bad.write_text(json.dumps({"v1": REFERENCES["v1"] | {"target": "x"}}))
    with pytest.raises(EvalInputError, match=r"bad\.json vs .*refs\.json: no 'target' "
                                             r"prediction for video 'v2'"):
        tm.text_scores_from_files([bad], refs)
