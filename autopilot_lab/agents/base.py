"""The agent interface: propose the next candidate from the history, the hints and the keeps."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

from autopilot_lab.candidate import Candidate
from autopilot_lab.hints import Hint, Keep
from autopilot_lab.journal import Journal

if TYPE_CHECKING:
    from autopilot_lab.objectives.base import Objective


class NoProposal(Exception):
    """The agent has nothing (new) to propose; the loop stops and says why."""


class Agent(abc.ABC):
    name: str

    @abc.abstractmethod
    def propose(self, objective: Objective, journal: Journal, hints: list[Hint],
                keeps: list[Keep]) -> Candidate:
        """The next candidate. ``hints`` are P1 first, rejected ones already removed;
        ``keeps`` list what passed and must be preserved."""
