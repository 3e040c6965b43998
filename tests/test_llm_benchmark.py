"""`python -m benchmarks.llm_agent`: without an endpoint one line and nothing written; against
the scripted chat-completions server on 127.0.0.1 (tests/llm_server.py, real HTTP through the
openai client, nothing patched) one real Keras case migrated with ``agent="auto"``, its row
and summary written to a temporary folder, without the key."""

from __future__ import annotations

import json

import pytest

from benchmarks import llm_agent, results_io
from tests.llm_server import ScriptedLLMServer, answer, error
from tests.test_llm_agent import KEY, LLM_ENV, MODEL, point_at

# What a good model answers for the feature_gate case: the stub's class, implemented.
FEATURE_GATE = """import torch
from torch import nn


class UntranslatedFeatureGate(nn.Module):
    \"\"\"Keras FeatureGate: x * sigmoid(gate), one trainable gate per feature.\"\"\"

    def __init__(self):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros((13,)))  # Keras feature_gate/gate

    def forward(self, x):
        return x * torch.sigmoid(self.gate)
"""


@pytest.fixture(autouse=True)
def no_endpoint_and_no_default_results(monkeypatch, tmp_path):
    """No LLM settings from the developer's environment or home; the default results folder
    is a temporary one, so that nothing can reach benchmarks/results/."""
    for var in LLM_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AUTOPILOT_LLM_CONFIG", str(tmp_path / "absent-llm.toml"))
    monkeypatch.setattr(results_io, "RESULTS", tmp_path / "default-results")


def test_without_an_endpoint_it_says_so_in_one_line_and_writes_nothing(tmp_path, capsys):
    assert llm_agent.main([]) == 0
    assert llm_agent.main(["--out", str(tmp_path / "out"), "--cases", "soft_clip"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [llm_agent.no_endpoint_message()] * 2
    (line,) = set(lines)
    assert "no LLM endpoint configured" in line
    for var in ("OPENAI_BASE_URL", "AUTOPILOT_LLM_MODEL", "absent-llm.toml", "docs/llm.md"):
        assert var in line
    assert not (tmp_path / "default-results").exists() and not (tmp_path / "out").exists()


def test_an_unknown_case_is_refused_before_anything_runs(capsys):
    with pytest.raises(SystemExit) as info:
        llm_agent.main(["--cases", "soft_clip,nope"])
    assert info.value.code == 2 and "unknown case(s) nope" in capsys.readouterr().err


def test_one_case_against_a_scripted_endpoint_the_llm_implements_the_custom_layer(
        tmp_path, monkeypatch, capsys):
    reply = {"files": {"model.py": FEATURE_GATE}, "summary": "FeatureGate as x * sigmoid(gate)"}
    out = tmp_path / "out"
    with ScriptedLLMServer([answer(json.dumps(reply))], api_key=KEY) as server:
        point_at(monkeypatch, server)
        rc = llm_agent.main(["--cases", "feature_gate", "--max-iters", "2", "--epochs", "2",
                             "--out", str(out)])
        (chat,) = server.chats
    assert rc == 0
    assert "Change only `UntranslatedFeatureGate` in model.py" in chat.prompt
    printed = capsys.readouterr().out
    assert "[1/1] feature_gate: passed; 2 iteration(s), winner llm (iteration 2); 1 LLM " \
           "request(s)" in printed
    assert not (tmp_path / "default-results").exists()
    text = (out / "llm_agent.json").read_text()
    md = (out / "llm_agent.md").read_text()
    assert KEY not in text and KEY not in md
    payload = json.loads(text)
    (row,) = payload["models"]
    assert row["name"] == "feature_gate" and row["data"] == "sklearn:wine"
    assert "trainable weight" in row["custom"] and "error" not in row
    assert row["passed"] and row["gates_passed"] and row["targets_met"]
    assert row["reason"] == "targets met" and row["epochs"] == 2
    assert row["agents"] == ["rules", "llm"] and row["iterations"] == 2
    assert (row["winner_agent"], row["best_iteration"]) == ("llm", 2)
    assert (row["llm_requests"], row["llm_failed"]) == (1, 0)
    assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
    assert row["cost_usd"] is None  # the scripted model has no price
    assert row["llm_models"] == [MODEL] and row["parity_max_abs_error"] < 1e-4
    assert row["seconds"] > 0
    summary = payload["summary"]
    assert (summary["cases"], summary["passed"], summary["errors"]) == (1, 1, 0)
    assert (summary["median_iterations"], summary["llm_requests"]) == (2, 1)
    assert summary["prompt_tokens"] == row["prompt_tokens"] and summary["model"] == MODEL
    assert payload["endpoint"]["base_url"] == server.url
    assert payload["endpoint"]["key"] == "$OPENAI_API_KEY"  # where the key came from, not it
    assert payload["command"].endswith("--cases feature_gate --max-iters 2 --epochs 2 --out "
                                       f"{out}")
    assert "| feature_gate |" in md and "| yes | 2 | llm (iteration 2) | 1 (0 failed) |" in md


def test_an_endpoint_that_refuses_gives_a_row_with_its_error_not_a_crash(
        tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    with ScriptedLLMServer([error(403, f"key {KEY} revoked")]) as server:
        point_at(monkeypatch, server)
        rc = llm_agent.main(["--cases", "soft_clip", "--max-iters", "2", "--epochs", "1",
                             "--out", str(out)])
    assert rc == 0
    text = (out / "llm_agent.json").read_text()
    assert KEY not in text and KEY not in capsys.readouterr().out
    (row,) = json.loads(text)["models"]
    assert not row["passed"] and row["winner_agent"] == "rules" and row["iterations"] == 1
    assert (row["llm_requests"], row["llm_failed"]) == (1, 1)
    assert "HTTP 403" in row["reason"] and "HTTP 403" in row["llm_errors"][0]
    assert row["open_hints"][0].startswith("[P1 UNSUPPORTED_LAYER]")
