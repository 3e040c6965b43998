"""The LLM agent against a real chat-completions server on 127.0.0.1 (tests/llm_server.py):
the official openai client talks HTTP to it, nothing is patched. Loop-level runs execute the
candidates in the real sandbox on sklearn:iris with two-epoch recipes."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import re
from functools import cache
from pathlib import Path

import pytest

from autopilot_lab import api, doctor
from autopilot_lab.agents import make_agent
from autopilot_lab.agents.auto import AutoAgent, llm_reason
from autopilot_lab.agents.base import NoProposal
from autopilot_lab.agents.llm import FormatProblem, LLMAgent, parse_answer, splice
from autopilot_lab.agents.llm_client import (
    EndpointDown,
    LLMClient,
    LLMConfig,
    probe_endpoint,
    resolve_config,
)
from autopilot_lab.agents.prompt import (
    PromptOptions,
    Region,
    build_messages,
    data_profile,
    prompt_input,
)
from autopilot_lab.agents.replay import replay_run
from autopilot_lab.candidate import Recipe
from autopilot_lab.hints import Hint, HintKind, Keep
from autopilot_lab.journal import Iteration, Journal
from autopilot_lab.objectives.improve import ImproveObjective
from autopilot_lab.scorecard import Scorecard, Verdict
from autopilot_lab.store import Store
from tests.llm_server import ScriptedLLMServer, Step, answer, error

KEY = "sk-test-7f3a9c-DO-NOT-STORE-41d2"
MODEL = "scripted-model"
RECIPE = {"epochs": 2, "lr": 0.01, "preprocessing": "standardize"}
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tabular_mlp.py"
LLM_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "AUTOPILOT_LLM_MODEL", "AUTOPILOT_LLM_CONFIG")


def point_at(mp: pytest.MonkeyPatch, server: ScriptedLLMServer, clear: bool = True) -> None:
    """Configure the LLM agent through the environment for ``server`` (and nothing else)."""
    if clear:
        for var in LLM_ENV:
            mp.delenv(var, raising=False)
    mp.setenv("OPENAI_BASE_URL", server.url)
    mp.setenv("OPENAI_API_KEY", KEY)
    mp.setenv("AUTOPILOT_LLM_MODEL", MODEL)


def good_source() -> str:
    return EXAMPLE.read_text()


def buggy_source() -> str:
    """The example MLP with one output column too many (SHAPE_MISMATCH, which no playbook
    repair answers) and two unused imports (two P4 STYLE hints)."""
    return (good_source()
            .replace("nn.Linear(hidden, n_outputs)", "nn.Linear(hidden, n_outputs + 1)")
            .replace("import torch\n", "import math\nimport typing\n\nimport torch\n", 1))


def fenced(text: str, name: str = "model.py") -> str:
    return f"```python {name}\n{text}```"


@pytest.fixture(autouse=True)
def clean_llm_env(monkeypatch, tmp_path):
    """No LLM settings from the developer's environment or home leak into a test."""
    for var in LLM_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AUTOPILOT_LLM_CONFIG", str(tmp_path / "absent-llm.toml"))


def iris_objective(source: str, target: str = "accuracy>=0.5") -> ImproveObjective:
    return ImproveObjective(source, "sklearn:iris", entry="TabularMLP", target=target,
                            recipe=RECIPE)


def card(*hints: Hint, gate_passed: bool = False) -> Scorecard:
    keeps = (Keep("static", "parses, imports only allowed modules"),
             Keep("static", "TabularMLP is an nn.Module with forward()"))
    return Scorecard((Verdict("static", 0, True, True, 1.0, keeps=keeps),
                      Verdict("build", 1, True, gate_passed, 0.0, hints=tuple(hints))))


SHAPE = Hint(HintKind.SHAPE_MISMATCH, "build", "output shape", [8, 4], "[8, 3]",
             "make the last layer output 3 column(s) per row", where="TabularMLP.forward")
NAN = Hint(HintKind.NAN_LOSS, "trainability", "loss", "nan at step 2", "finite loss",
           "lower the learning rate", where="recipe.lr")
STYLE = Hint(HintKind.STYLE, "static", "ruff F401", "`math` imported but unused",
             "no finding", "apply ruff rule F401", where="model.py:3")
REJECTED = Hint(HintKind.STYLE, "static", "ruff F401", "`typing` imported but unused",
                "no finding", "apply ruff rule F401", where="model.py:4")


def journal_of(objective: ImproveObjective, *cards: Scorecard) -> Journal:
    journal = Journal()
    for n, c in enumerate(cards, 1):
        cand = objective.initial_candidate().replace(
            recipe=Recipe(**{**RECIPE, "seed": n}), notes={"summary": f"try {n}"})
        journal.add(Iteration(n, cand, c, "rules"))
    return journal


def agent_for(server: ScriptedLLMServer, draft_first: bool = True, **settings) -> LLMAgent:
    cfg = LLMConfig(base_url=server.url, model=MODEL, api_key=KEY, timeout_s=10,
                    backoff_s=0.01, **settings)
    return LLMAgent(cfg, draft_first=draft_first)


# ---- configuration, parsing, prompt: no loop ---------------------------------------------

def test_config_comes_from_arguments_then_environment_then_file_and_hides_the_key(
        tmp_path, monkeypatch):
    conf = tmp_path / "llm.toml"
    conf.write_text('base_url = "http://file:1/v1"\nmodel = "file-model"\ntemperature = 0.7\n'
                    'api_key_env = "MY_LLM_KEY"\n[prices]\n"file-model" = [1.0, 3.0]\n')
    monkeypatch.setenv("AUTOPILOT_LLM_CONFIG", str(conf))
    cfg = resolve_config()
    assert (cfg.base_url, cfg.model, cfg.temperature) == ("http://file:1/v1", "file-model", 0.7)
    assert cfg.api_key is None and cfg.key_source == "not set"
    assert cfg.cost("file-model", 1_000_000, 1_000_000) == 4.0
    assert cfg.cost("gpt-4o-mini-2024-07-18", 1_000_000, 0) == 0.15  # prefix of a snapshot
    assert cfg.cost("llama3.1:8b", 10, 10) is None  # a local model has no price
    monkeypatch.setenv("OPENAI_BASE_URL", "http://env:2/v1")
    monkeypatch.setenv("AUTOPILOT_LLM_MODEL", "env-model")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-plain")
    monkeypatch.setenv("MY_LLM_KEY", KEY)
    cfg = resolve_config()
    assert (cfg.base_url, cfg.model) == ("http://env:2/v1", "env-model")
    assert cfg.api_key == KEY and cfg.key_source == "$MY_LLM_KEY"
    cfg = resolve_config(model="arg-model", temperature=0.0)
    assert (cfg.model, cfg.temperature, cfg.base_url) == ("arg-model", 0.0, "http://env:2/v1")
    assert KEY not in repr(cfg) and KEY not in json.dumps(cfg.public())
    conf.write_text("modle = 'typo'\n")
    with pytest.raises(ValueError, match="unknown LLM settings"):
        resolve_config()


def test_answers_are_parsed_from_json_or_from_fenced_blocks_that_name_their_file():
    obj = {"files": {"model.py": "x = 1\n"}, "recipe": {"lr": 0.1}, "summary": "lower lr"}
    a = parse_answer(json.dumps(obj), "stop", main="model.py")
    assert (a.files, a.recipe, a.summary) == ({"model.py": "x = 1\n"}, {"lr": 0.1}, "lower lr")
    a = parse_answer("```json\n" + json.dumps(obj) + "\n```", "stop", main="model.py")
    assert a.files == {"model.py": "x = 1\n"}
    text = ("Fixed both.\n```python model.py\nA = 1\n```\nand the helper\n"
            "```python\n# file: blocks/util.py\nB = 2\n```\nThen `extra.py`:\n```py\nC = 3\n```\n"
            '```json\n{"recipe": {"epochs": 4}}\n```\nWidened the output layer.')
    a = parse_answer(text, "stop", main="model.py")
    assert set(a.files) == {"model.py", "blocks/util.py", "extra.py"}
    assert a.files["model.py"] == "A = 1\n" and a.recipe == {"epochs": 4}
    assert a.summary == "Widened the output layer."
    a = parse_answer("Here:\n```\nD = 4\n```", "stop", main="net.py")
    assert a.files == {"net.py": "D = 4\n"}


@pytest.mark.parametrize("text, finish, observed", [
    ("```python model.py\nx = (", "length", "finish_reason=length"),
    ("Change the last layer to output 3 columns.", "stop", "no fenced code block"),
    ("Sure:\n```python\nclass Net(nn.Module):\n    pass\n", "stop", "unclosed code fence"),
    ('{"files": {"model.py": "x = 1"', "stop", "invalid JSON"),
    ('{"files": {"model.py": 3}}', "stop", '"files" is not an object'),
    ("```python\nA = 1\n```\n```python\nB = 2\n```", "stop", "without a file name"),
    ("   ", "stop", "an empty answer"),
])
def test_unusable_answers_become_format_problems(text, finish, observed):
    with pytest.raises(FormatProblem, match=re.escape(observed)) as info:
        parse_answer(text, finish, main="model.py")
    hint = info.value.hint()
    assert hint.kind is HintKind.FORMAT and hint.priority.name == "P1"


def test_splice_changes_only_the_named_definition():
    source = ("import torch\nfrom torch import nn\n\n\nclass UntranslatedScale(nn.Module):\n"
              "    def forward(self, *inputs):\n        raise NotImplementedError('x')\n\n\n"
              "class Net(nn.Module):\n    def forward(self, x):\n        return x\n")
    answer = parse_answer(fenced("import math\n\nimport torch\nfrom torch import nn\n\n\n"
                                 "class UntranslatedScale(nn.Module):\n"
                                 "    def forward(self, x):\n        return x * math.pi\n"),
                          "stop", main="model.py")
    out = splice(source, answer, Region("model.py", "UntranslatedScale", "implement"))
    assert "return x * math.pi" in out and "NotImplementedError" not in out
    assert "import math\n" in out
    assert out.endswith("class Net(nn.Module):\n    def forward(self, x):\n        return x\n")
    assert out.startswith("import torch\nfrom torch import nn\nimport math\n")


def test_prompt_holds_targets_hints_p1_first_keeps_and_statistics_not_rows():
    objective = iris_objective(buggy_source())
    journal = journal_of(objective, card(STYLE, REJECTED, SHAPE))
    inp = prompt_input(objective, journal, [STYLE, REJECTED, SHAPE], journal.best.scorecard.keeps,
                       rejected={REJECTED.key}, draft=None)
    text = build_messages(inp)[1]["content"]
    assert "target: accuracy" in text and "iris" in text
    assert text.index("[P1 SHAPE_MISMATCH] build at TabularMLP.forward") < text.index("[P4 STYLE]")
    assert "observed: [8, 4]" in text and "expected: [8, 3]" in text
    assert "# Keep: these parts pass, do not change them" in text
    assert "- static: parses, imports only allowed modules" in text
    assert "`typing` imported but unused" not in text  # the rejected hint, nowhere
    assert "`math` imported but unused" in text
    assert "nn.Linear(hidden, n_outputs + 1)" in text  # the current best's source
    X, _ = objective.task.part("train")
    rows = [str([float(f"{v:.4g}") for v in row]) for row in X]
    assert "feature: mean / std / min / max" in text
    assert not any(r in text for r in rows)
    with_rows = build_messages(prompt_input(objective, journal, [SHAPE], [], samples=3))
    assert sum(r in with_rows[1]["content"] for r in rows) >= 3
    assert data_profile(objective.task)["target"]["class_counts"] == {
        "setosa": 30, "versicolor": 30, "virginica": 30}


class ReferenceObjective(ImproveObjective):
    """An objective with a reference model, as `migrate` gives one."""

    def prompt_context(self, hints):
        return {"keras_config": {"class_name": "Sequential", "layers": 3},
                "layers": [{"name": "dense", "class": "Dense", "output_shape": [None, 32]},
                           {"name": "scale", "class": "Scale", "output_shape": [None, 32]}],
                "failing_layer": {"name": "scale", "class": "Scale", "config": {"factor": 2},
                                  "source": "class Scale(keras.layers.Layer):\n"
                                            "    def call(self, x):\n        return x * 2"}}


def test_the_reference_model_and_an_unscored_draft_reach_the_prompt():
    objective = ReferenceObjective(good_source(), "sklearn:iris", entry="TabularMLP",
                                   recipe=RECIPE)
    with ScriptedLLMServer([answer(fenced(good_source().replace("32", "64")))]) as server:
        cand = agent_for(server, draft_first=False).propose(objective, Journal(), [], [])
        prompt = server.chats[0].prompt
    assert "# Current candidate (not scored yet)" in prompt
    assert "scale: Scale -> [None, 32]" in prompt
    assert '"factor": 2' in prompt and "return x * 2" in prompt
    assert cand.parent is None and "hidden: int = 64" in cand.source


def test_smaller_prompt_levels_drop_history_minor_hints_and_other_files():
    objective = iris_objective(buggy_source())
    journal = journal_of(objective, card(SHAPE, STYLE), card(SHAPE, STYLE))
    top = journal.best  # a tie: the later iteration (journal.rank)
    best = top.candidate
    journal.iterations[journal.iterations.index(top)] = Iteration(
        top.n, best.replace(files={**best.files, "helpers.py": "H = 1\n" * 900}),
        top.scorecard, "rules")
    inp = prompt_input(objective, journal, [SHAPE, STYLE], [])
    sizes, options = [], PromptOptions()
    while options is not None:
        text = build_messages(inp, options)[1]["content"]
        sizes.append(len(text))
        options = options.smaller()
    assert sizes == sorted(sizes, reverse=True) and len(sizes) == 4
    smallest = build_messages(inp, PromptOptions(level=3))[1]["content"]
    assert "[P4 STYLE]" not in smallest and "# Earlier iterations" not in smallest
    assert "helpers.py (not shown; keep it as it is)" in smallest
    assert "[P1 SHAPE_MISMATCH]" in smallest and "nn.Linear(hidden, n_outputs + 1)" in smallest


# ---- the agent and the client against the server, no loop -----------------------------

def test_context_length_error_shrinks_the_prompt_and_retries():
    objective = iris_objective(buggy_source())
    journal = journal_of(objective, card(SHAPE, STYLE))
    too_long = "This model's maximum context length is 512 tokens. However, you requested 900"
    with ScriptedLLMServer([error(400, too_long), error(400, too_long),
                            answer(fenced(good_source()) + "\nFixed the width.")]) as server:
        cand = agent_for(server, structured="off").propose(objective, journal, [SHAPE, STYLE], [])
        sizes = [len(r.prompt) for r in server.chats]
    assert cand.notes["prompt_level"] == 2 and cand.notes["exchanges"] == 3
    assert sizes[0] > sizes[1] > sizes[2]
    assert cand.source == good_source() and cand.parent == 1
    assert cand.notes["llm"]["failed"] == 2 and cand.notes["summary"] == "Fixed the width."


def test_an_unsupported_layer_is_asked_for_alone_and_spliced_in():
    source = good_source().replace(
        "class TabularMLP", "class UntranslatedScale(nn.Module):\n    def forward(self, *inputs):"
        "\n        raise NotImplementedError('Keras layer scale')\n\n\nclass TabularMLP")
    objective = iris_objective(source)
    hint = Hint(HintKind.UNSUPPORTED_LAYER, "translate", "layer scale", "Scale",
                "a translation", "implement the layer as an nn.Module",
                where="UntranslatedScale")
    journal = journal_of(objective, card(hint))
    stub = ("class UntranslatedScale(nn.Module):\n    def forward(self, x):\n"
            "        return x * 2.0\n")
    with ScriptedLLMServer([answer(json.dumps({"files": {"model.py": stub},
                                               "summary": "scale by 2"}))]) as server:
        auto = AutoAgent(agent_for(server))
        cand = auto.propose(objective, journal, [hint], [])
        prompt = server.chats[0].prompt
    assert "Change only `UntranslatedScale` in model.py" in prompt
    assert cand.notes["agent"] == "llm" and "UNSUPPORTED_LAYER" in cand.notes["why"]
    assert cand.notes["region"] == {"file": "model.py", "symbol": "UntranslatedScale"}
    assert cand.source == source.replace(
        "    def forward(self, *inputs):\n        raise NotImplementedError('Keras layer scale')",
        "    def forward(self, x):\n        return x * 2.0")


def test_auto_asks_the_llm_only_for_what_the_rules_cannot_answer():
    objective = iris_objective(good_source())
    assert llm_reason(journal_of(objective, card(NAN)), [NAN]) is None
    assert "no playbook repair answers SHAPE_MISMATCH" in llm_reason(
        journal_of(objective, card(SHAPE)), [SHAPE])
    stuck = journal_of(objective, card(NAN), card(NAN))
    assert "NAN_LOSS at recipe.lr persisted" in llm_reason(stuck, [NAN])
    assert llm_reason(journal_of(objective, card(SHAPE, STYLE)), [SHAPE, STYLE]).endswith(
        "SHAPE_MISMATCH")  # only the most urgent priority counts
    with ScriptedLLMServer([]) as server:  # the rules answer NAN_LOSS: no request is made
        cand = AutoAgent(agent_for(server)).propose(objective, journal_of(objective, card(NAN)),
                                                    [NAN], [])
        assert server.chats == []
    assert cand.notes["agent"] == "rules" and cand.notes["why"] == \
        "a playbook repair answers NAN_LOSS"


def test_refusals_end_at_once_and_long_retry_after_is_not_waited_for():
    with ScriptedLLMServer([], api_key="sk-the-right-one") as server:
        cfg = LLMConfig(base_url=server.url, model=MODEL, api_key=KEY, backoff_s=0.01)
        with pytest.raises(EndpointDown, match="refused the request: HTTP 401") as info:
            LLMClient(cfg).complete([{"role": "user", "content": "hi"}], iteration=2)
        assert KEY not in str(info.value) and len(server.chats) == 1
    with ScriptedLLMServer([error(429, "slow down", retry_after="3600")]) as server:
        cfg = LLMConfig(base_url=server.url, model=MODEL, max_wait_s=5)
        with pytest.raises(EndpointDown, match="asks to wait 3600 s"):
            LLMClient(cfg).complete([{"role": "user", "content": "hi"}], iteration=2)
        assert len(server.chats) == 1  # refused at once: no retry after any wait


def test_a_stream_that_breaks_off_is_retried_and_usage_comes_from_the_stream():
    records = []
    with ScriptedLLMServer([answer("x" * 400, break_stream=True), answer("y" * 400)]) as server:
        cfg = LLMConfig(base_url=server.url, model=MODEL, stream=True, backoff_s=0.01)
        reply = LLMClient(cfg, record=records.append).complete(
            [{"role": "user", "content": "hi"}], iteration=2)
    assert reply.text == "y" * 400 and reply.finish_reason == "stop"
    assert reply.completion_tokens == 100 and not reply.response["usage"]["estimated"]
    assert [r.status for r in records] == ["connection", "ok"]
    assert "broke off" in records[0].error


def test_doctor_says_whether_the_endpoint_answers_and_which_model_it_serves(monkeypatch):
    assert probe_endpoint()["configured"] is False
    assert "no LLM endpoint configured" in doctor.render(
        {**doctor.diagnose(), "llm": doctor._llm_endpoint()})
    with ScriptedLLMServer([], api_key=KEY) as server:
        point_at(monkeypatch, server, clear=False)
        probe = probe_endpoint()
        url = server.url
    assert probe["ok"] and probe["models"] == [MODEL] and probe["model_served"]
    assert probe["key"] == "$OPENAI_API_KEY" and KEY not in json.dumps(probe)
    down = probe_endpoint(timeout_s=1.0)  # the server is gone now
    assert down["ok"] is False and "connection" in down["error"]
    text = doctor.render({"autopilot_lab": "x", "python": "3", "platform": "p", "packages": {},
                          "devices": {}, "sandbox": {}, "datasets_dir": "d", "llm": probe})
    assert f"url              {url}" in text and f"model            {MODEL} (served)" in text


def test_make_agent_knows_llm_auto_and_replay():
    assert make_agent("auto").name == "auto" and make_agent("llm").name == "llm"
    with pytest.raises(ValueError, match="needs|reads the recorded run"):
        make_agent("replay:r-1")
    with pytest.raises(ValueError, match=r"or replay:<run id>"):
        make_agent("gpt")


# ---- whole runs: the loop, the sandbox, the store -----------------------------------------

def _config_file(path: Path, **settings) -> Path:
    lines = [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    path.write_text("\n".join(lines) + f'\n[prices]\n"{MODEL}" = [1.0, 2.0]\n')
    return path


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    """`auto` on a model with a shape bug: the rules' draft, then the LLM's fix (streamed
    JSON). After iteration 1 the user rejects one of the two STYLE hints."""
    tmp = tmp_path_factory.mktemp("run_a")
    fix = {"files": {"model.py": good_source()}, "recipe": {"epochs": 2},
           "summary": "the last layer outputs n_outputs columns; unused imports removed"}
    with ScriptedLLMServer([answer(json.dumps(fix))], api_key=KEY) as server, \
            pytest.MonkeyPatch.context() as mp:
        for var in LLM_ENV:
            mp.delenv(var, raising=False)
        mp.setenv("OPENAI_BASE_URL", server.url)
        mp.setenv("OPENAI_API_KEY", KEY)
        mp.setenv("AUTOPILOT_LLM_CONFIG", str(_config_file(tmp / "llm.toml", stream=True,
                                                           timeout_s=30.0)))
        store = Store(tmp / "home")

        def reject_typing_hint(loop):
            def between(it):
                for h in it.scorecard.hints:
                    if "`typing`" in str(h.observed):
                        store.record_decision(loop.run_id, it.n, h.key, "reject", "not now")
                store.record_decision(loop.run_id, it.n, "", "note", USER_NOTE)
            loop.between_iterations = between

        result = api.improve(buggy_source(), "sklearn:iris", target="accuracy>=0.5",
                             recipe=RECIPE, agent="auto", max_iters=3, store=store,
                             on_loop=reject_typing_hint)
        yield result, store, server, tmp
        store.close()


USER_NOTE = "keep the hidden width at 32"


def test_a_auto_runs_the_rules_first_and_the_llm_fixes_what_they_cannot(run_a):
    result, store, server, _ = run_a
    first, second = result.history
    assert first.agent == "rules" and first.scorecard.failed_gate == "build"
    assert HintKind.SHAPE_MISMATCH in {h.kind for h in first.scorecard.hints}
    assert second.agent == "llm"
    assert second.candidate.notes["why"] == "no playbook repair answers SHAPE_MISMATCH"
    assert second.scorecard.all_gates_passed and result.targets_met
    assert result.best.n == 2 and result.best_candidate.source == good_source()
    (ex,) = store.llm_exchanges(result.run_id)
    assert ex["iteration"] == 2 and ex["agent"] == "auto" and ex["status"] == "ok"
    assert ex["model"] == MODEL  # the only model the endpoint serves
    assert ex["request"]["body"]["stream"] is True
    assert ex["request"]["body"]["response_format"]["type"] == "json_schema"
    assert ex["response"]["usage"]["estimated"] is False and ex["prompt_tokens"] > 100
    assert ex["cost_usd"] == pytest.approx(
        (ex["prompt_tokens"] * 1.0 + ex["completion_tokens"] * 2.0) / 1e6)
    assert store.llm_totals(result.run_id)["requests"] == 1
    report = result.report
    assert report["llm"]["prompt_tokens"] == ex["prompt_tokens"]
    assert [i["why"] for i in report["iterations"]] == [
        "first iteration: the objective's own draft",
        "no playbook repair answers SHAPE_MISMATCH"]
    md = result.report_paths["md"].read_text()
    assert "| 2 | llm | no playbook repair answers SHAPE_MISMATCH | 1 |" in md
    assert "## LLM usage" in md


def test_b_the_prompt_holds_hints_p1_first_keeps_no_rejected_hint_and_no_data_row(run_a):
    result, store, server, _ = run_a
    (chat,) = server.chats
    assert chat.headers["authorization"] == f"Bearer {KEY}"  # the key is sent, only there
    prompt = chat.prompt
    assert prompt.index("[P1 SHAPE_MISMATCH]") < prompt.index("[P4 STYLE]")
    assert "observed: [8, 4]" in prompt and "expected: [8, 3]" in prompt
    assert "suggestion: make the last layer output 3 column(s)" in prompt
    assert "# Keep: these parts pass, do not change them" in prompt
    for keep in result.history[0].scorecard.keeps:
        assert f"- {keep.check}: {keep.what}" in prompt
    rejected = store.rejected_hint_keys(result.run_id)
    assert len(rejected) == 1 and "`typing` imported but unused" not in prompt
    assert "model.py:4" not in prompt  # not in the history either
    assert "`math` imported but unused" in prompt
    # the note, recorded again after every iteration: listed once, after the hints
    assert store.user_notes(result.run_id) == [USER_NOTE]
    assert prompt.count(f"- {USER_NOTE}") == 1
    assert prompt.index("# Hints") < prompt.index("# The user's notes") < prompt.index(
        f"- {USER_NOTE}")
    X, _ = ImproveObjective(good_source(), "sklearn:iris").task.part("train")
    for row in X:
        assert str([float(f"{v:.4g}") for v in row]) not in prompt
        assert ", ".join(f"{v:g}" for v in row) not in prompt


CLOSE = "Here is model.py with the fix:\n"


@pytest.fixture(scope="module")
def run_c(tmp_path_factory):
    """`auto` against a flaky server without structured output: 429 with Retry-After, 500, a
    slow answer, an answer without code, a cut-off one, then an endpoint that stays down."""
    tmp = tmp_path_factory.mktemp("run_c")
    wrong_dtype = good_source().replace("return self.net(x)", "return self.net(x).long()")
    wrong_width = good_source().replace("return self.net(x)", "return self.net(x)[:, :2]")
    steps = [
        # iteration 2
        error(429, "rate limit reached", retry_after="1"),
        error(500, "internal error"),
        Step(text=fenced(good_source()), delay_s=3.0),  # past the 1.5 s timeout
        answer("You should make the last layer output three columns."),
        answer(CLOSE + "```python\n" + wrong_dtype + "```\nCast the logits."),
        # iteration 3
        answer("```python model.py\nimport torch\nclass TabularMLP(nn.Mo", finish_reason="length"),
        answer(fenced(wrong_width) + '\n```json\n{"recipe": {"lr": 0.005}}\n```\nSliced.'),
        # iteration 4: down for good (max_retries 3: four attempts)
        *[error(503, "overloaded")] * 4,
    ]
    with ScriptedLLMServer(steps, structured=False, api_key=KEY) as server, \
            pytest.MonkeyPatch.context() as mp:
        point_at(mp, server)
        mp.setenv("AUTOPILOT_LLM_CONFIG", str(_config_file(
            tmp / "llm.toml", timeout_s=1.5, backoff_s=0.05, max_retries=3)))
        store = Store(tmp / "home")
        logs = io.StringIO()
        handler = logging.StreamHandler(logs)
        root = logging.getLogger()
        level = root.level
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)  # the openai client's and httpx's debug lines too
        try:
            result = api.improve(buggy_source(), "sklearn:iris", target="accuracy>=0.5",
                                 recipe=RECIPE, agent="auto", max_iters=6, store=store)
        finally:
            root.removeHandler(handler)
            root.setLevel(level)
        (tmp / "home" / "run.log").write_text(logs.getvalue())
        yield result, store, server, tmp
        store.close()


def test_c_a_flaky_endpoint_is_survived_and_a_dead_one_ends_the_run_cleanly(run_c):
    result, store, server, _ = run_c
    assert result.status == "finished" and len(result.history) == 3
    assert "gave no answer in 4 attempts" in result.reason
    assert "HTTP 503" in result.reason and "best candidate so far" in result.reason
    assert result.best is not None and result.report_paths["md"].exists()
    statuses = {n: [e["status"] for e in store.llm_exchanges(result.run_id, n)]
                for n in (2, 3, 4)}
    assert statuses == {
        2: ["bad_request", "rate_limited", "server_error", "timeout", "ok", "ok"],
        3: ["ok", "ok"],
        4: ["server_error"] * 4,
    }
    # nothing lost: every request the server saw is in the store, in order
    assert len(server.chats) == len(store.llm_exchanges(result.run_id)) == 12
    totals = store.llm_totals(result.run_id)
    assert totals["requests"] == 12 and totals["failed"] == 8 and totals["cost_usd"] > 0
    assert [it["n"] for it in store.iterations(result.run_id)] == [1, 2, 3]
    chats = server.chats
    assert chats[2].at - chats[1].at >= 0.95  # Retry-After: 1 honoured
    assert "response_format" in chats[0].body
    assert not any("response_format" in c.body for c in chats[1:])  # fell back to fences
    second, third = result.history[1], result.history[2]
    assert second.candidate.notes["format_problems"] == ["no fenced code block"]
    assert "[P1 FORMAT] agent: answer format" in chats[5].prompt
    assert second.candidate.notes["llm"]["requests"] == 6
    assert second.candidate.notes["llm"]["failed"] == 4
    assert HintKind.DTYPE_MISMATCH in {h.kind for h in second.scorecard.hints}
    assert "finish_reason=length" in third.candidate.notes["format_problems"][0]
    assert third.candidate.recipe.lr == 0.005 and third.candidate.notes["summary"] == "Sliced."
    run = store.get_run(result.run_id)
    assert run["status"] == "finished" and run["reason"] == result.reason


def test_the_key_appears_nowhere_in_the_store_the_run_folders_or_the_logs(run_a, run_c):
    log_text = (run_c[3] / "home" / "run.log").read_text()
    assert "retry 1 of 3 in 1.00 s" in log_text  # the logs were captured, retries and all
    for _, store, _, tmp in (run_a, run_c):
        store.close()  # checkpoint the WAL into the database file
        files = [p for p in (tmp / "home").rglob("*") if p.is_file()]
        assert any(p.name == "autopilot.db" for p in files)
        for path in files:
            assert KEY.encode() not in path.read_bytes(), path


def test_d_a_replayed_run_reproduces_the_iterations_and_scores_exactly(run_c, caplog):
    original, store, server, _ = run_c
    seen = len(server.received)
    with caplog.at_level(logging.WARNING, logger="autopilot_lab.agents.replay"):
        replay = replay_run(original.run_id, store=store)
    assert len(server.received) == seen  # answered from the store: no request was made
    assert "prompt differs" not in caplog.text  # the same prompts were built again
    assert replay.reason == original.reason
    assert len(replay.history) == len(original.history)
    for a, b in zip(original.history, replay.history):
        assert (a.n, a.agent, a.score) == (b.n, b.agent, b.score)
        assert a.candidate.digest() == b.candidate.digest()
        assert [v.to_json() for v in a.scorecard.verdicts] == \
            [v.to_json() for v in b.scorecard.verdicts]
        assert a.candidate.notes.get("format_problems") == b.candidate.notes.get(
            "format_problems")
    assert replay.history[1].candidate.notes["replay_of"] == original.run_id
    assert store.get_run(replay.run_id)["agent"] == f"replay:{original.run_id}"
    assert store.llm_exchanges(replay.run_id) == []


def test_an_unusable_answer_twice_ends_the_run_with_the_best_so_far(tmp_path, monkeypatch):
    with ScriptedLLMServer([answer("no code here"), answer("still none")]) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("AUTOPILOT_LLM_MODEL", MODEL)
        agent = make_agent("llm")
        objective = iris_objective(buggy_source())
        journal = journal_of(objective, card(SHAPE))
        with pytest.raises(NoProposal, match="unusable twice in iteration 2: no fenced code "
                                             "block; then no fenced code block"):
            agent.propose(objective, journal, [SHAPE], [])
        assert len(server.chats) == 2


# ---- migrate: a custom Keras layer the translator does not know ---------------------------

@cache
def scaled_tanh_layer() -> type:
    """A custom Keras layer, ``alpha * tanh(x)`` with a trainable scalar ``alpha`` (1.5 at
    first); defined on first use so the rest of this file does not import TensorFlow."""
    import keras

    @keras.saving.register_keras_serializable(package="tests")
    class ScaledTanh(keras.layers.Layer):
        def build(self, input_shape):
            self.alpha = self.add_weight(shape=(), name="alpha",
                                         initializer=keras.initializers.Constant(1.5))

        def call(self, x):
            return self.alpha * keras.ops.tanh(x)

    return ScaledTanh


IMPLEMENTED = """import torch
from torch import nn


class UntranslatedScaledTanh(nn.Module):
    \"\"\"Keras ScaledTanh: alpha * tanh(x), alpha a trainable scalar.\"\"\"

    def __init__(self):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(()))  # Keras scaled_tanh/alpha

    def forward(self, x):
        return self.alpha * torch.tanh(x)
"""


def scaled_tanh_model():
    """Dense -> ScaledTanh -> Dense(3, softmax), compiled: Keras code a user might bring."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((4,))
    x = keras.layers.Dense(8, name="hidden")(inp)
    x = scaled_tanh_layer()(name="scaled_tanh")(x)
    out = keras.layers.Dense(3, activation="softmax", name="out")(x)
    model = keras.Model(inp, out, name="with_scaled_tanh")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def test_migrate_prompt_context_names_the_failing_keras_layer_and_its_source():
    from autopilot_lab.objectives.migrate import MigrateObjective

    objective = MigrateObjective(scaled_tanh_model())
    io = Hint(HintKind.IO_MISMATCH, "parity", "gradient max abs error", 0.3, "<= 0.001",
              "the gradient differs", where="scaled_tanh.alpha")
    ctx = objective.prompt_context([STYLE, io])
    assert ctx["keras_config"]["name"] == "with_scaled_tanh"
    assert ctx["keras_config"]["loss"] == "sparse_categorical_crossentropy"
    assert {"name": "hidden", "class": "Dense", "output_shape": [None, 8]} in ctx["layers"]
    failing = ctx["failing_layer"]
    assert (failing["name"], failing["class"]) == ("scaled_tanh", "ScaledTanh")
    assert "keras.ops.tanh(x)" in failing["source"] and "dtype" not in failing["config"]
    dense = objective.prompt_context([dataclasses.replace(io, where="model.py:hidden")])
    assert dense["failing_layer"]["config"]["units"] == 8
    assert "source" not in dense["failing_layer"]  # a built-in layer: its config says it all
    assert "failing_layer" not in objective.prompt_context([STYLE])
    assert objective.translation.state_dict["scaled_tanh.alpha"].shape == ()  # a scalar stays


def test_auto_migrate_has_the_llm_implement_an_unsupported_custom_layer_until_parity(
        tmp_path, monkeypatch):
    model = scaled_tanh_model()
    reply = {"files": {"model.py": IMPLEMENTED}, "summary": "ScaledTanh as alpha * tanh(x)"}
    with ScriptedLLMServer([answer(json.dumps(reply))], api_key=KEY) as server:
        point_at(monkeypatch, server, clear=False)
        store = Store(tmp_path / "home")
        try:
            result = api.migrate(model, agent="auto", max_iters=3, store=store)
        finally:
            store.close()
        (chat,) = server.chats
    first, second = result.history
    # iteration 1: the translator's draft, with the stub
    assert first.agent == "rules" and first.scorecard.failed_gate == "unsupported"
    (hint,) = first.scorecard.hints
    assert hint.kind is HintKind.UNSUPPORTED_LAYER and hint.observed == "scaled_tanh (ScaledTanh)"
    assert "raise NotImplementedError" in first.candidate.source
    # the prompt: the hint, the Keras model, the failing layer with its config and source
    prompt = chat.prompt
    assert "[P1 UNSUPPORTED_LAYER] unsupported" in prompt
    assert "Change only `UntranslatedScaledTanh` in model.py" in prompt
    assert "# Reference model" in prompt and "scaled_tanh: ScaledTanh -> [None, 8]" in prompt
    assert "out: Dense -> [None, 3]" in prompt
    assert "failing layer: scaled_tanh (ScaledTanh)" in prompt
    assert "return self.alpha * keras.ops.tanh(x)" in prompt.split("failing layer:")[1]
    # iteration 2: the LLM's class spliced in, the rest of the draft byte for byte; parity
    assert second.agent == "llm" and "UNSUPPORTED_LAYER (model.py:" in second.candidate.notes[
        "why"]
    assert second.candidate.notes["region"] == {"file": "model.py",
                                                "symbol": "UntranslatedScaledTanh"}
    source = second.candidate.source
    assert "return self.alpha * torch.tanh(x)" in source and "NotImplementedError" not in source
    draft = first.candidate.source
    assert source.split("class WithScaledTanh")[1] == draft.split("class WithScaledTanh")[1]
    assert second.candidate.artifacts == first.candidate.artifacts  # the converted weights
    parity = second.scorecard.verdict("parity")
    assert parity is not None and parity.passed, second.scorecard.hints
    assert parity.evidence["max_abs_error"] < 1e-4
    assert second.scorecard.all_gates_passed and result.targets_met
    assert result.reason == "targets met" and result.best.n == 2
