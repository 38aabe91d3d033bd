"""VLAVAD's Selective Prompt Adapter: answer normalization, prompt choice, rarity scores."""
import pytest

from tvad_jax.models.spa import SPA, concentration, fit_spa, normalize_answer


def test_normalize_answer_drops_case_punctuation_and_extra_spaces():
    assert normalize_answer("  Walking slowly,  to the LEFT. ") == "walking slowly to the left"
    assert normalize_answer("Standing!") == normalize_answer("standing")


def test_concentration_is_the_share_of_the_top_k_answers():
    answers = ["a", "a", "a", "b", "b", "c", "d", "e"]
    assert concentration(answers, 1) == pytest.approx(3 / 8)
    assert concentration(answers, 2) == pytest.approx(5 / 8)
    assert concentration(answers, 10) == pytest.approx(1.0)
    assert concentration(["A.", "a"], 1) == pytest.approx(1.0)      # normalized before counting


def test_fit_spa_chooses_the_most_concentrated_prompts_and_counts_their_answers():
    answers = {"pose": ["up", "up", "up", "up"],                    # concentration 1.0
               "behaviour": ["walk", "walk", "run", "stand"],        # 0.5 at k = 1
               "appearance": ["red", "blue", "green", "pink"]}       # 0.25
    spa = fit_spa(answers, top_k=1, skip_saturated=False)     # the paper's rule
    assert spa.prompts == ("pose",)
    assert spa.concentrations == pytest.approx({"pose": 1.0, "behaviour": 0.5,
                                                "appearance": 0.25})
    two = fit_spa(answers, top_k=1, num_prompts=2, skip_saturated=False)
    assert two.prompts == ("pose", "behaviour")
    assert dict(two.counts["behaviour"]) == {"walk": 2, "run": 1, "stand": 1}


def test_saturated_prompts_come_after_every_other_prompt():
    answers = {"pose": ["up", "up", "up", "down"],                  # 2 distinct: 1.0 at k = 2
               "behaviour": ["walk", "walk", "run", "stand"],        # 0.75
               "appearance": ["red", "blue", "green", "pink"]}       # 0.5
    assert fit_spa(answers, top_k=2).prompts == ("behaviour",)
    assert fit_spa(answers, top_k=2, num_prompts=3).prompts == ("behaviour", "appearance",
                                                                 "pose")
    assert fit_spa(answers, top_k=1).prompts == ("pose",)           # 2 distinct > k = 1
    everything_saturated = {"pose": ["up", "up", "down"], "behaviour": ["walk", "walk"]}
    assert fit_spa(everything_saturated, top_k=2).prompts == ("pose",)   # 1.0 each: order


def test_scores_are_reciprocal_counts_summed_over_the_chosen_prompts():
    spa = fit_spa({"pose": ["up", "up", "up"], "behaviour": ["walk", "walk", "run"]},
                  top_k=1, num_prompts=2)
    scores = spa.scores({"pose": ["Up.", "lying", "up"], "behaviour": ["walk", "run", "fly"]})
    assert scores.tolist() == pytest.approx([1 / 4 + 1 / 3, 1 + 1 / 2, 1 / 4 + 1])
    with pytest.raises(ValueError, match="missing"):
        spa.scores({"pose": ["up"]})


def test_spa_round_trips_through_json():
    spa = fit_spa({"pose": ["up", "down", "up"], "appearance": ["x", "y", "z"]}, top_k=1)
    again = SPA.from_json(spa.to_json())
    assert again == spa
    assert again.scores({"pose": ["down"]}).tolist() == [0.5]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        fit_spa({}, top_k=1)
    with pytest.raises(ValueError):
        fit_spa({"pose": ["a"]}, top_k=1, num_prompts=2)
    with pytest.raises(ValueError):
        concentration([], 3)
