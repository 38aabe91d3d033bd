"""Text metrics of the dialogue answers: BLEU-4 (sacrebleu) and Yes/No accuracy.

Protocol of paper 000 §4.1: BLEU-4 separately per answer type (target appearance, trajectory);
with several references for an answer, the best-matching reference per video, macro-averaged
over videos. Yes/No answers are normalized to yes/no and scored by accuracy and balanced
accuracy (TPR + TNR) / 2, "yes" (anomalous) being the positive class. Repeated runs with
different seeds are summarized by mean and sample standard deviation.

BLEU is on sacrebleu's 0-100 scale (default 13a tokenization; sentence level with its default
exponential smoothing and effective order); accuracies are fractions in [0, 1].

JSON files: predictions `{video: {answer_type: "text"}}`; references
`{video: {answer_type: "text" | ["text", ...]}}`. Every (video, answer type) of the
references must have a prediction.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import sacrebleu

from tvad_jax.errors import EvalInputError
from tvad_jax.infer.dialogue import normalize_yes_no

YES_NO_TYPES = ("yes_no",)


def sentence_bleu4(hypothesis: str, references: Sequence[str]) -> float:
    """Sentence-level BLEU-4 of one hypothesis against its references (multi-reference)."""
    return float(sacrebleu.sentence_bleu(hypothesis, list(references)).score)


def corpus_bleu4(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus-level BLEU-4; `references[i]` are the references of `hypotheses[i]`."""
    if len(hypotheses) != len(references):
        raise EvalInputError(f"{len(hypotheses)} hypotheses but {len(references)} reference sets")
    width = max((len(r) for r in references), default=0)
    streams = [[r[j] if j < len(r) else None for r in references] for j in range(width)]
    return float(sacrebleu.corpus_bleu(list(hypotheses), streams).score)


def best_reference_bleu4(hypothesis: str, references: Sequence[str]) -> float:
    """The highest sentence BLEU-4 of the hypothesis against any single reference."""
    return max(sentence_bleu4(hypothesis, [ref]) for ref in references)


def macro_bleu4(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Mean over videos of the best-reference sentence BLEU-4."""
    if len(hypotheses) != len(references) or not hypotheses:
        raise EvalInputError(f"{len(hypotheses)} hypotheses but {len(references)} reference sets")
    return float(np.mean([best_reference_bleu4(h, r) for h, r in zip(hypotheses, references)]))


def yes_no_scores(predictions: Sequence[str], references: Sequence[str]) -> dict:
    """Accuracy, balanced accuracy, the confusion counts and the number of unparsable answers.

    Balanced accuracy averages the recalls of the classes present in the references; an
    answer that normalizes to neither yes nor no counts as wrong. `confusion` counts
    "<truth>_as_<answer>" (answer yes, no or unparsed).
    """
    if len(predictions) != len(references) or not predictions:
        raise EvalInputError(f"{len(predictions)} answers but {len(references)} references")
    truth = [normalize_yes_no(r) for r in references]
    if None in truth:
        bad = references[truth.index(None)]
        raise EvalInputError(f"reference {bad!r} is neither yes nor no")
    guess = np.array([normalize_yes_no(p) or "" for p in predictions])
    truth = np.array(truth)
    correct = guess == truth
    recalls = [correct[truth == c].mean() for c in ("yes", "no") if (truth == c).any()]
    confusion = {f"{t}_as_{g or 'unparsed'}": int(((truth == t) & (guess == g)).sum())
                 for t in ("yes", "no") for g in ("yes", "no", "")}
    return {"accuracy": float(correct.mean()), "balanced_accuracy": float(np.mean(recalls)),
            "unparsed": int((guess == "").sum()), "num_videos": len(truth),
            "confusion": confusion}


def text_scores(predictions: Mapping[str, Mapping[str, str]],
                references: Mapping[str, Mapping[str, str | Sequence[str]]],
                yes_no_types: Sequence[str] = YES_NO_TYPES) -> dict[str, dict]:
    """Scores per answer type: BLEU-4 (macro best-reference and corpus) or Yes/No accuracy."""
    per_type: dict[str, tuple[list[str], list[list[str]]]] = {}
    for video in sorted(references):
        for kind, refs in references[video].items():
            answer = predictions.get(video, {}).get(kind)
            if answer is None:
                raise EvalInputError(f"no {kind!r} prediction for video {video!r}")
            hyps, ref_sets = per_type.setdefault(kind, ([], []))
            hyps.append(answer)
            ref_sets.append([refs] if isinstance(refs, str) else list(refs))
    extra = sorted(set(predictions) - set(references))
    if extra:
        raise EvalInputError(f"predictions for videos without references: {extra[:5]}")
    scores = {}
    for kind, (hyps, ref_sets) in sorted(per_type.items()):
        if kind in yes_no_types:
            scores[kind] = yes_no_scores(hyps, [r[0] for r in ref_sets])
        else:
            scores[kind] = {"bleu4": macro_bleu4(hyps, ref_sets),
                            "corpus_bleu4": corpus_bleu4(hyps, ref_sets),
                            "num_videos": len(hyps)}
    return scores


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value)."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def text_scores_over_runs(runs: Sequence[Mapping[str, Mapping[str, str]]],
                          references: Mapping[str, Mapping[str, str | Sequence[str]]],
                          yes_no_types: Sequence[str] = YES_NO_TYPES) -> dict[str, dict]:
    """`text_scores` of each run, each metric as the mean over runs plus `<metric>_std`."""
    return summarize_runs([text_scores(p, references, yes_no_types) for p in runs])


def summarize_runs(per_run: Sequence[Mapping[str, Mapping[str, float]]]) -> dict[str, dict]:
    """Per-run `text_scores` -> each metric's mean plus `<metric>_std`, and `num_runs`
    (counts that are no metric, the Yes/No confusion, are summed over runs)."""
    summary: dict[str, dict] = {}
    for kind, metrics in per_run[0].items():
        summary[kind] = {"num_runs": len(per_run)}
        for name, value in metrics.items():
            if name == "num_videos":
                summary[kind][name] = value
                continue
            if name == "confusion":
                summary[kind][name] = {k: sum(run[kind][name][k] for run in per_run)
                                       for k in value}
                continue
            mean, std = mean_std([run[kind][name] for run in per_run])
            summary[kind][name], summary[kind][name + "_std"] = mean, std
    return summary


def read_answers_json(path: str | Path, allow_lists: bool) -> dict[str, dict]:
    """A validated `{video: {answer_type: text}}` JSON file (lists of texts if allowed)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise EvalInputError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
    except OSError as err:
        raise EvalInputError(f"{path}: cannot read ({err})") from None
    if not isinstance(data, dict) or not data:
        raise EvalInputError(f"{path}: expected a non-empty object {{video: {{type: text}}}}")
    for video, answers in data.items():
        if not isinstance(answers, dict):
            raise EvalInputError(f"{path}: video {video!r}: expected {{type: text}}")
        for kind, text in answers.items():
            texts = text if allow_lists and isinstance(text, list) else [text]
            if not texts or not all(isinstance(t, str) for t in texts):
                raise EvalInputError(f"{path}: video {video!r}, {kind!r}: expected "
                                     f"{'text or a list of texts' if allow_lists else 'text'}")
    return data


def text_scores_from_files(prediction_paths: Sequence[str | Path], reference_path: str | Path,
                           yes_no_types: Sequence[str] = YES_NO_TYPES) -> dict[str, dict]:
    """`text_scores_over_runs` of prediction files (one per seed) against a references file."""
    references = read_answers_json(reference_path, allow_lists=True)
    per_run = []
    for path in prediction_paths:
        predictions = read_answers_json(path, allow_lists=False)
        try:
            per_run.append(text_scores(predictions, references, yes_no_types))
        except EvalInputError as err:
            raise EvalInputError(f"{path} vs {reference_path}: {err}") from None
    return summarize_runs(per_run)
