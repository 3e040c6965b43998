"""The LLM agent: the typed hints in, whole files out, through any OpenAI-compatible endpoint.

One proposal is one prompt (``prompt.py``) and one answer. The answer is whole files: a JSON
object ``{"files": {...}, "recipe": {...}, "init_kwargs": {...}, "summary": ...}`` where the
server does structured output, fenced code blocks that name their file otherwise. An unusable
answer (no code, cut off at the token limit, invalid JSON, an invalid recipe, a repeat of a
scored candidate) becomes a FORMAT hint and one re-ask in the same iteration; a second unusable
answer, or an endpoint that stays down, ends the run through :class:`NoProposal` with the best
candidate so far. A context-length refusal shrinks the prompt level by level.

When the top hint is an UNSUPPORTED_LAYER whose stub class is in the model file, the agent asks
for that class only and splices it in: the rest of the file stays byte for byte.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autopilot_lab.agents.base import Agent, NoProposal
from autopilot_lab.agents.llm_client import (
    EndpointDown,
    EndpointError,
    Exchange,
    LLMClient,
    LLMConfig,
    Transport,
    resolve_config,
)
from autopilot_lab.agents.prompt import (
    ANSWER_SCHEMA,
    PromptOptions,
    Region,
    build_messages,
    prompt_input,
    reask_message,
)
from autopilot_lab.candidate import Candidate, Recipe
from autopilot_lab.hints import Hint, HintKind, Keep
from autopilot_lab.journal import Journal

SAMPLE_ROWS = 5  # training rows shown when the configuration allows samples
_FILE_RE = re.compile(r"[\w.-]+(?:/[\w.-]+)*\.py")
_FENCE_RE = re.compile(r"^[ \t]*```[ \t]*([^\n`]*)\n(.*?)^[ \t]*```[ \t]*$", re.M | re.S)
_NAME_LINE_RE = re.compile(r"#\s*(?:file(?:name)?\s*[:=]\s*)?([\w./-]+\.py)\s*$")
_CODE_LANGS = ("", "python", "py", "python3")


@dataclass(frozen=True)
class Answer:
    """What an answer asks to change: files (name -> whole source), recipe fields,
    constructor arguments, and its one-line account."""

    files: dict[str, str]
    recipe: dict[str, Any] | None
    init_kwargs: dict[str, Any] | None
    summary: str


class FormatProblem(Exception):
    """The answer cannot be used; becomes a FORMAT hint for the re-ask."""

    def __init__(self, observed: str, suggestion: str):
        super().__init__(observed)
        self.observed, self.suggestion = observed, suggestion

    def hint(self) -> Hint:
        return Hint(HintKind.FORMAT, "agent", "answer format", self.observed,
                    "whole files as one JSON object or in fenced code blocks that name them",
                    self.suggestion)


def parse_answer(text: str, finish_reason: str | None, *, main: str) -> Answer:
    """The files, recipe and summary of an answer, JSON or fenced; raises FormatProblem."""
    if finish_reason == "length":
        raise FormatProblem("the answer was cut off at the token limit (finish_reason=length)",
                            "answer again with only the changed files, in full, and no "
                            "explanation")
    stripped = text.strip()
    if not stripped:
        raise FormatProblem("an empty answer", "answer with the changed files in full")
    whole = re.fullmatch(r"```[ \t]*(?:json)?[ \t]*\n(.*)\n[ \t]*```", stripped, re.S)
    if stripped.startswith("{"):
        return _from_json(stripped)
    if whole and whole.group(1).lstrip().startswith("{") and '"files"' in whole.group(1):
        return _from_json(whole.group(1))
    return _from_fences(stripped, main)


def _from_json(text: str) -> Answer:
    fix = 'answer with one valid JSON object: {"files": {"model.py": "..."}, "summary": "..."}'
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise FormatProblem(f"invalid JSON: {e.msg} at line {e.lineno} column {e.colno}",
                            fix) from None
    if not isinstance(obj, dict):
        raise FormatProblem(f"JSON that is a {type(obj).__name__}, not an object", fix)
    files = obj.get("files") or {}
    if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in files.items()):
        raise FormatProblem('"files" is not an object of file name -> non-empty source', fix)
    recipe, init_kwargs = obj.get("recipe") or None, obj.get("init_kwargs")
    for name, value in (("recipe", recipe), ("init_kwargs", init_kwargs)):
        if value is not None and not isinstance(value, dict):
            raise FormatProblem(f'"{name}" is not an object', fix)
    if not files and not recipe and init_kwargs is None:
        raise FormatProblem("a JSON object with no files, no recipe and no init_kwargs", fix)
    return Answer(files, recipe, init_kwargs, str(obj.get("summary") or "")[:300])


def _from_fences(text: str, main: str) -> Answer:
    code: list[tuple[str | None, str]] = []
    recipe = init_kwargs = None
    prose, last = [], 0
    for m in _FENCE_RE.finditer(text):
        before = text[last:m.start()]
        prose.append(before)
        last = m.end()
        info, body = m.group(1).strip(), m.group(2)
        lang = info.split()[0].lower() if info else ""
        if lang == "json":
            try:
                obj = json.loads(body)
            except json.JSONDecodeError as e:
                raise FormatProblem(f"invalid JSON in a json block: {e.msg} at line {e.lineno}",
                                    'give recipe changes as ```json {"recipe": {...}} ```'
                                    ) from None
            if isinstance(obj, dict) and ("recipe" in obj or "init_kwargs" in obj):
                recipe = obj.get("recipe", recipe)
                init_kwargs = obj.get("init_kwargs", init_kwargs)
            elif isinstance(obj, dict):
                recipe = obj
            continue
        name = _fence_name(info, body, before)
        if name or lang in _CODE_LANGS:
            code.append((name, body))
    prose.append(text[last:])
    if not code and not recipe and init_kwargs is None:
        cut = " (an unclosed code fence: the answer looks cut off)" if "```" in text else ""
        raise FormatProblem("no fenced code block" + cut,
                            "answer with each changed file in full in a fenced block: "
                            "```python model.py")
    unnamed = [body for name, body in code if name is None]
    if unnamed and len(code) > 1:
        raise FormatProblem(f"{len(code)} code blocks, {len(unnamed)} without a file name",
                            "name each file in its fence: ```python model.py")
    files = {name or main: body for name, body in code}
    lines = [ln.strip() for ln in "".join(prose).splitlines() if ln.strip()]
    return Answer(files, recipe, init_kwargs, lines[-1][:300] if lines else "")


def _fence_name(info: str, body: str, before: str) -> str | None:
    """The file a fenced block is for: named in the fence, in a first-line comment, or on
    the line just before the fence."""
    for token in info.split()[1:] + info.split()[:1]:
        token = token.split("=")[-1].strip("\"'`")
        if _FILE_RE.fullmatch(token):
            return token
    first = body.split("\n", 1)[0].strip()
    m = _NAME_LINE_RE.fullmatch(first)
    if m:
        return m.group(1)
    lines = [ln for ln in before.splitlines() if ln.strip()]
    found = _FILE_RE.findall(lines[-1]) if lines else []
    return found[-1] if found else None


def find_region(candidate: Candidate, hints: list[Hint]) -> Region | None:
    """For an UNSUPPORTED_LAYER hint: the stub class of the main file it names (or the only
    ``Untranslated*`` class), to be implemented alone."""
    try:
        tree = ast.parse(candidate.source)
    except SyntaxError:
        return None
    classes = [n.name for n in tree.body
               if isinstance(n, ast.ClassDef) and n.name != candidate.entry]
    for h in hints:
        if h.kind is not HintKind.UNSUPPORTED_LAYER:
            continue
        said = f"{h.where} {h.observed} {h.metric} {h.suggestion}"
        named = [c for c in classes if re.search(rf"\b{re.escape(c)}\b", said)]
        stubs = [c for c in classes if c.startswith("Untranslated")]
        pick = named or (stubs if len(stubs) == 1 else [])
        if pick:
            return Region(candidate.main, pick[0], f"{h.metric}: {h.suggestion}")
    return None


def splice(source: str, answer: Answer, region: Region) -> str:
    """``source`` with ``region.symbol`` replaced by (or given) the answer's definition and
    the answer's missing imports added; nothing else changes."""
    new = answer.files.get(region.file)
    if new is None and len(answer.files) == 1:
        new = next(iter(answer.files.values()))
    fix = f"answer with the definition of `{region.symbol}` (or the whole {region.file})"
    if new is None:
        raise FormatProblem(f"no code for `{region.symbol}`", fix)
    try:
        new_tree = ast.parse(new)
    except SyntaxError as e:
        raise FormatProblem(f"the code for `{region.symbol}` does not parse: {e.msg} at line "
                            f"{e.lineno}", fix) from None
    node = _top_def(new_tree, region.symbol)
    if node is None:
        raise FormatProblem(f"the answer does not define `{region.symbol}`", fix)
    new_lines = new.splitlines()
    block = new_lines[_first_line(node) - 1:node.end_lineno]
    lines = source.splitlines()
    old = _top_def(ast.parse(source), region.symbol)
    if old is not None:
        lines[_first_line(old) - 1:old.end_lineno] = block
    else:
        lines += ["", ""] + block
    have = {ln.strip() for ln in lines}
    imports = [ln for n in new_tree.body if isinstance(n, ast.Import | ast.ImportFrom)
               for ln in new_lines[n.lineno - 1:n.end_lineno] if ln.strip() not in have]
    if imports:
        tree = ast.parse("\n".join(lines))
        at = max((n.end_lineno for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)),
                 default=0)
        lines[at:at] = imports
    return "\n".join(lines) + "\n"


def _top_def(tree: ast.Module, name: str) -> ast.ClassDef | ast.FunctionDef | None:
    return next((n for n in tree.body if isinstance(n, ast.ClassDef | ast.FunctionDef)
                 and n.name == name), None)


def _first_line(node: ast.ClassDef | ast.FunctionDef) -> int:
    return min([node.lineno] + [d.lineno for d in node.decorator_list])


class LLMAgent(Agent):
    """Proposes candidates written by an LLM. With ``store`` and ``run_id`` every exchange is
    recorded with the run; ``transport`` replaces HTTP (the replay uses it)."""

    name = "llm"

    def __init__(self, config: LLMConfig | None = None, *, store: Any = None,
                 run_id: str | None = None, transport: Transport | None = None,
                 sleep: Callable[[float], None] = time.sleep, label: str = "llm",
                 draft_first: bool = True):
        self.config = config or resolve_config()
        self.store, self.run_id, self.label = store, run_id, label
        self.draft_first = draft_first
        self.client = LLMClient(self.config, transport=transport, record=self._on_exchange,
                                sleep=sleep)
        self._exchanges: list[Exchange] = []

    def propose(self, objective: Any, journal: Journal, hints: list[Hint],
                keeps: list[Keep]) -> Candidate:
        if not journal.iterations and self.draft_first:
            draft = objective.initial_candidate()
            return draft.replace(notes={
                **draft.notes, "agent": self.name, "exchanges": 0,
                "summary": "first draft: " + objective.draft_summary(),
                "why": "the first iteration scores the objective's own draft"})
        top = min((h.priority for h in hints), default=None)
        kinds = sorted({h.kind.name for h in hints if h.priority == top})
        if not journal.iterations:
            why = "asked to rewrite the objective's draft before it is scored"
        elif kinds:
            why = f"answers the {top.name} hints: {', '.join(kinds)}"
        else:
            why = "every check passed; asked to raise the score"
        return self.propose_for(objective, journal, hints, keeps, why=why)

    def propose_for(self, objective: Any, journal: Journal, hints: list[Hint],
                    keeps: list[Keep], *, why: str) -> Candidate:
        """One LLM proposal; ``why`` says why the LLM was asked (kept in the notes)."""
        n = len(journal) + 1
        best = journal.best
        base = best.candidate if best else objective.initial_candidate()
        region = find_region(base, hints)
        recorded = self.store is not None and self.run_id is not None
        rejected = self.store.rejected_hint_keys(self.run_id) if recorded else ()
        notes = self.store.user_notes(self.run_id) if recorded else ()
        inp = prompt_input(objective, journal, hints, keeps, rejected=rejected, region=region,
                           samples=SAMPLE_ROWS if self.config.include_samples else 0, draft=base,
                           notes=notes)
        self._exchanges = []
        problems: list[str] = []
        options = PromptOptions(structured=self.client.structured)
        while True:
            problems.clear()  # format problems of this prompt size only
            try:
                candidate, summary = self._ask(build_messages(inp, options), n, base, journal,
                                               region, problems)
                break
            except EndpointError as e:  # context_length: the only kind complete() lets out
                smaller = options.smaller()
                if smaller is None:
                    raise NoProposal(f"the LLM's context is too small even for the smallest "
                                     f"prompt ({e.describe()})") from None
                options = smaller
            except EndpointDown as e:
                raise NoProposal(f"{e}; the run ends with the best candidate so far") from None
        notes = {"agent": self.name, "summary": summary or "LLM change", "why": why,
                 "exchanges": len(self._exchanges), "llm": self.usage(),
                 "prompt_level": options.level}
        if problems:
            notes["format_problems"] = problems
        if region:
            notes["region"] = {"file": region.file, "symbol": region.symbol}
        return candidate.replace(parent=best.n if best else None, notes=notes)

    def _on_exchange(self, ex: Exchange) -> None:
        self._exchanges.append(ex)
        if self.store is not None and self.run_id is not None:
            self.store.record_llm_exchange(self.run_id, agent=self.label, **dataclasses.asdict(ex))

    def usage(self) -> dict[str, Any]:
        """Requests, tokens, cost and latency of the current proposal."""
        ex = self._exchanges
        costs = [e.cost_usd for e in ex if e.cost_usd is not None]
        return {"model": self.client.model, "requests": len(ex),
                "failed": sum(e.status != "ok" for e in ex),
                "prompt_tokens": sum(e.prompt_tokens or 0 for e in ex),
                "completion_tokens": sum(e.completion_tokens or 0 for e in ex),
                "cost_usd": round(sum(costs), 8) if costs else None,
                "latency_s": round(sum(e.latency_s for e in ex), 4)}

    def _ask(self, messages: list[dict[str, str]], n: int, base: Candidate, journal: Journal,
             region: Region | None, problems: list[str]) -> tuple[Candidate, str]:
        reply = self.client.complete(messages, iteration=n, schema=ANSWER_SCHEMA)
        try:
            return self._candidate(reply.text, reply.finish_reason, base, journal, region)
        except FormatProblem as p:
            problems.append(p.observed)
            retry = messages + [{"role": "assistant", "content": reply.text[:4000] or "(empty)"},
                                reask_message(p.hint(), self.client.structured)]
        reply = self.client.complete(retry, iteration=n, schema=ANSWER_SCHEMA)
        try:
            return self._candidate(reply.text, reply.finish_reason, base, journal, region)
        except FormatProblem as p:
            problems.append(p.observed)
            raise NoProposal(f"the LLM's answer was unusable twice in iteration {n}: "
                             f"{problems[0]}; then {problems[1]}") from None

    def _candidate(self, text: str, finish_reason: str | None, base: Candidate,
                   journal: Journal, region: Region | None) -> tuple[Candidate, str]:
        answer = parse_answer(text, finish_reason, main=base.main)
        files = dict(base.files)
        if region is not None:
            files[region.file] = splice(files[region.file], answer, region)
        else:
            files.update(_file_names(answer.files, base))
        try:
            recipe = Recipe.from_dict({**base.recipe.to_dict(), **(answer.recipe or {})})
            candidate = base.replace(files=files, recipe=recipe,
                                     init_kwargs=base.init_kwargs if answer.init_kwargs is None
                                     else answer.init_kwargs)
        except (ValueError, TypeError) as e:
            raise FormatProblem(f"an invalid recipe or candidate: {e}",
                                "use only the recipe fields and values listed") from None
        digest = candidate.digest()
        again = next((it for it in journal.iterations if it.candidate.digest() == digest), None)
        if again is not None:
            raise FormatProblem(f"the candidate of iteration {again.n} again (score "
                                f"{again.score}): nothing new", "change the code or the "
                                "recipe; that candidate was already scored")
        return candidate, answer.summary


def _file_names(files: dict[str, str], base: Candidate) -> dict[str, str]:
    """Validated file names; a single unknown name stands for the main file."""
    if len(files) == 1 and not set(files) & set(base.files):
        return {base.main: next(iter(files.values()))}
    for name in files:
        if not _FILE_RE.fullmatch(name) or ".." in name.split("/"):
            raise FormatProblem(f"a file name that is not a relative .py path: {name!r}",
                                f"name files like {base.main}")
    return files
