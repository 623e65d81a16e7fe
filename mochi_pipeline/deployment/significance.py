"""One-sided exact tests for the held-out measures: against chance, and fine-tuned against base."""

from __future__ import annotations

import math

SIGNIFICANCE = 0.01  # a check of a gain passes on a one-sided p-value below this


def binomial_tail(hits: int, n: int, p: float) -> float:
    """P(X >= hits) for X ~ Binomial(n, p): the one-sided p-value of ``hits`` successes in ``n`` against ``p``."""
    return min(1.0, sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(hits, n + 1)))


def sign_test(wins: int, losses: int) -> float:
    """One-sided exact sign test (McNemar's, exact): P(at least ``wins`` of the ``wins + losses`` discordant cases
    go one way when either way is as likely)."""
    return binomial_tail(wins, wins + losses, 0.5) if wins + losses else 1.0
