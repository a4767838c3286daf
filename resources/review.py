"""Who answers review tasks: people (default in production) or the simulated reviewer (demo)."""

import dagster as dg

from avops.curation.reviewer_sim import answer_tasks
from avops.home import HomeLayout


class ReviewTeam(dg.ConfigurableResource):
    """``mode: human`` leaves tasks for people; ``mode: simulated`` answers them from simulator ground truth.

    The simulated mode exists for the demo and tests only: it is the one place where
    curation reads ground truth, and it says so in every label it returns.
    """

    mode: str = "simulated"
    delay_seconds: float = 0.0

    def process_pending(self, home: HomeLayout, cohort: str) -> int:
        if self.mode == "human":
            return 0
        if self.mode != "simulated":
            raise ValueError(f"review mode {self.mode!r} is not 'human' or 'simulated'")
        return answer_tasks(home, cohort, self.delay_seconds)
