"""rerank_beats_chance passes on a significant gain only: the one-sided binomial p-value of the top-1 hits."""

from __future__ import annotations

import math

from mochi_pipeline.deployment.significance import SIGNIFICANCE, binomial_tail, sign_test


def test_the_p_value_is_the_binomial_upper_tail():
    assert binomial_tail(0, 40, 0.25) == 1.0  # at least no hit: certain
    assert math.isclose(binomial_tail(3, 3, 0.25), 0.25**3)
    # By hand: P(X >= 2) for n = 3, p = 1/4 is 3 * (1/4)^2 * (3/4) + (1/4)^3 = 10/64.
    assert math.isclose(binomial_tail(2, 3, 0.25), 10 / 64)


def test_a_handful_of_lucky_cases_is_not_significant_but_a_real_gain_is():
    assert binomial_tail(2, 3, 0.25) > SIGNIFICANCE  # 2 of 3 right: what luck gives one time in six
    assert binomial_tail(12, 40, 0.25) > SIGNIFICANCE  # 30% of 40 against a chance of 25%
    assert binomial_tail(33, 40, 0.25) < 1e-9  # the Gemma run's 0.825 of 40 cases


def test_against_the_base_only_the_cases_one_model_got_right_count():
    assert sign_test(0, 0) == 1.0  # the same answers on every case: no evidence either way
    assert math.isclose(sign_test(5, 0), 1 / 32)  # five cases won, none lost
    assert sign_test(3, 3) > 0.5 and sign_test(10, 1) < SIGNIFICANCE
