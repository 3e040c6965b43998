"""Candidates and recipes: validation at the edge with errors that say what is allowed."""

import pytest

from autopilot_lab.candidate import Candidate, Recipe


def test_recipe_rejects_unknown_values_naming_the_allowed_ones():
    with pytest.raises(ValueError, match=r"optimizer must be one of \('adam'"):
        Recipe(optimizer="lion")
    with pytest.raises(ValueError, match="lr must be > 0"):
        Recipe(lr=0)
    with pytest.raises(ValueError, match=r"unknown recipe fields \['learning_rate'\]"):
        Recipe.from_dict({"learning_rate": 0.1})


def test_candidate_round_trip_and_digest_ignore_notes():
    c = Candidate(files={"model.py": "x = 1\n"}, entry="Net", recipe=Recipe(lr=0.1),
                  notes={"summary": "a"})
    again = Candidate.from_dict(c.to_dict())
    assert again == c
    assert c.replace(notes={"summary": "b"}).digest() == c.digest()
    assert c.replace(recipe=Recipe(lr=0.2)).digest() != c.digest()


def test_candidate_needs_its_main_file_and_a_class_name():
    with pytest.raises(ValueError, match="no main file 'model.py'"):
        Candidate(files={"net.py": ""}, entry="Net")
    with pytest.raises(ValueError, match="entry must be a class name"):
        Candidate(files={"model.py": ""}, entry="not a name")
