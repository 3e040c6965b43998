"""What "done" means for a run: inputs, the ladder, the targets, the default agent."""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

from autopilot_lab.candidate import Candidate
from autopilot_lab.checks import CheckContext, Ladder
from autopilot_lab.sandbox import Sandbox


class Objective(abc.ABC):
    name: str
    default_agent = "rules"

    @abc.abstractmethod
    def spec(self) -> dict[str, Any]:
        """Everything needed to rebuild this objective (stored with the run, for resume)."""

    @classmethod
    @abc.abstractmethod
    def from_spec(cls, spec: dict[str, Any]) -> Objective:
        ...

    @abc.abstractmethod
    def setup(self, workdir: Path, sandbox: Sandbox) -> CheckContext:
        """Load the data, compute baselines and the target; return the checks' context."""

    @abc.abstractmethod
    def initial_candidate(self) -> Candidate:
        """The first draft: the user's model, or a translation of the reference."""

    @abc.abstractmethod
    def ladder(self) -> Ladder:
        ...

    def draft_summary(self) -> str:
        return "the model as given"

    def export(self, candidate: Candidate) -> dict[str, bytes | str]:
        """Extra files for the run folder's ``best/`` beside the candidate's sources."""
        return {}

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """For the report, prompts and live views: task, target, baselines (after
        ``setup``), valid figures only: no test figure may reach an agent."""

    def test_references(self) -> dict[str, dict[str, float]]:
        """The references' test metrics (the Keras original, the classical baseline), for
        the final scoring only (``evaluation.final_test``)."""
        return {}

    def test_target(self) -> Any:
        """The target as it reads on the test part (a ``Target``, or None): the same bound
        for an absolute target, the reference's test figure for a relative one."""
        return None
