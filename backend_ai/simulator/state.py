"""The simulator's mutable server-wide state: current defaults, budget, fault counters, stats.

One instance per server process, owned by the ASGI app. ``reset()`` returns to the start-up
configuration so each test begins from the same place whatever the previous test configured.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .budget import BudgetLimiter
from .profile import DEFAULT_PROFILE, Budget, SimProfile
from .stats import SimStats

__all__ = ["SimulatorState"]


class SimulatorState:
    """Start-up config plus what has changed since: runtime config, attempts, stats."""

    def __init__(
        self, defaults: SimProfile = DEFAULT_PROFILE, budget: Budget | None = None
    ) -> None:
        self.startup_defaults = defaults
        self.startup_budget = budget if budget is not None else Budget()
        self.stats = SimStats()
        self.defaults = self.startup_defaults
        self.limiter = BudgetLimiter(self.startup_budget)
        # attempt_key -> attempts seen, for ``fail_first``
        self.attempts: Counter[str] = Counter()

    def reset(self) -> None:
        """Zero the stats and fault counters and restore the start-up defaults and budget."""
        self.stats.reset()
        self.attempts.clear()
        self.defaults = self.startup_defaults
        self.limiter = BudgetLimiter(self.startup_budget)

    def configure(self, *, defaults: SimProfile | None, budget: Budget | None) -> None:
        """Replace the defaults and/or the budget (a new budget starts with empty buckets)."""
        if defaults is not None:
            self.defaults = defaults
        if budget is not None:
            self.limiter = BudgetLimiter(budget)

    def config_snapshot(self) -> dict[str, Any]:
        budget = self.limiter.budget
        return {
            "defaults": self.defaults.as_dict(),
            "budget": budget.as_dict(),
        }
