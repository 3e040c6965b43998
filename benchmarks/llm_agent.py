"""The LLM agent, measured: Keras models the offline translator cannot finish alone, migrated
with ``agent="auto"`` against a real OpenAI-compatible endpoint.

    python -m benchmarks.llm_agent                       # every case, at most 3 iterations
    python -m benchmarks.llm_agent --cases soft_clip,lambda_softsign --max-iters 5
    python -m benchmarks.llm_agent --out /tmp/llm_bench  # results elsewhere

Why: the rules translator turns a layer it has no exact rule for (a custom ``Layer``
subclass, a ``keras.layers.Lambda``) into a named stub and an UNSUPPORTED_LAYER hint, and
``auto`` hands exactly that to the LLM. Whether the loop then reaches parity, in how many
iterations and at what price (requests, tokens, dollars) depends on the endpoint and its
model; this benchmark makes that a figure. Each case is a small, seeded Keras model built
here, trained on a bundled scikit-learn dataset for a few epochs, and migrated with
``autopilot_lab.api.migrate`` into a run store in a temporary folder.

The endpoint is the one the LLM agent itself uses (``OPENAI_BASE_URL``, ``OPENAI_API_KEY``,
``AUTOPILOT_LLM_MODEL`` or the config file, see docs/llm.md); without one the benchmark says
so in one line and exits 0 without writing anything. An endpoint that fails mid-way gives a
row with its error, not a crash. Writes ``benchmarks/results/llm_agent.json`` and ``.md``
(``--out`` for another folder); the API key is never written.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from benchmarks import results_io

NAME = "llm_agent"
SEED = 0


@dataclass(frozen=True)
class Case:
    """One Keras model with a part the translator cannot translate."""

    name: str
    custom: str  # what the untranslatable part is
    data: str  # a bundled dataset spec
    build: Callable[[], Any]  # the compiled Keras model, seeded
    fit: dict[str, Any] = field(default_factory=lambda: {"epochs": 5, "batch_size": 16})


# ---- the custom Keras parts, defined on first use (importing this module stays cheap) ----

@cache
def _layers() -> dict[str, type]:
    import keras

    @keras.saving.register_keras_serializable(package="benchmarks.llm_agent")
    class SoftClip(keras.layers.Layer):
        """``limit * tanh(x / limit)``: a smooth clip to (-limit, limit); no weights."""

        def __init__(self, limit: float = 2.0, **kwargs):
            super().__init__(**kwargs)
            self.limit = limit

        def call(self, x):
            return self.limit * keras.ops.tanh(x / self.limit)

        def get_config(self):
            return {**super().get_config(), "limit": self.limit}

    @keras.saving.register_keras_serializable(package="benchmarks.llm_agent")
    class FeatureGate(keras.layers.Layer):
        """``x * sigmoid(gate)``: one trainable gate per feature, starting at 1."""

        def build(self, input_shape):
            self.gate = self.add_weight(shape=(input_shape[-1],), name="gate",
                                        initializer=keras.initializers.Constant(1.0))

        def call(self, x):
            return x * keras.ops.sigmoid(self.gate)

    @keras.saving.register_keras_serializable(package="benchmarks.llm_agent")
    class GatedMerge(keras.layers.Layer):
        """Two inputs: ``a * sigmoid(b)``, a gated linear unit across two branches."""

        def call(self, inputs):
            a, b = inputs
            return a * keras.ops.sigmoid(b)

    # A Lambda's named function must be registered, as for any saved model: the migration
    # clones the model (keras.models.clone_model), which looks the function up by name.
    @keras.saving.register_keras_serializable(package="benchmarks.llm_agent")
    def softsign_squash(t):
        """The Lambda's function: ``t / (1 + abs(t))``."""
        return t / (1.0 + keras.ops.abs(t))

    return {"SoftClip": SoftClip, "FeatureGate": FeatureGate, "GatedMerge": GatedMerge,
            "softsign_squash": softsign_squash}


def _compiled(inputs, outputs, name: str):
    import keras

    model = keras.Model(inputs, outputs, name=name)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def soft_clip_model():
    """iris: Dense(16) -> SoftClip(limit=2) -> Dense(3, softmax)."""
    import keras

    keras.utils.set_random_seed(SEED)
    inp = keras.Input((4,))
    x = keras.layers.Dense(16, name="hidden")(inp)
    x = _layers()["SoftClip"](limit=2.0, name="soft_clip")(x)
    out = keras.layers.Dense(3, activation="softmax", name="out")(x)
    return _compiled(inp, out, "with_soft_clip")


def lambda_softsign_model():
    """breast_cancer: Dense(16) -> Lambda(softsign_squash) -> Dense(2, softmax)."""
    import keras

    keras.utils.set_random_seed(SEED)
    inp = keras.Input((30,))
    x = keras.layers.Dense(16, name="hidden")(inp)
    x = keras.layers.Lambda(_layers()["softsign_squash"], name="squash")(x)
    out = keras.layers.Dense(2, activation="softmax", name="out")(x)
    return _compiled(inp, out, "with_lambda")


def feature_gate_model():
    """wine: FeatureGate (13 trainable gates) -> Dense(16, relu) -> Dense(3, softmax)."""
    import keras

    keras.utils.set_random_seed(SEED)
    inp = keras.Input((13,))
    x = _layers()["FeatureGate"](name="feature_gate")(inp)
    x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
    out = keras.layers.Dense(3, activation="softmax", name="out")(x)
    return _compiled(inp, out, "with_feature_gate")


def gated_merge_model():
    """iris: two Dense(8) branches merged by GatedMerge -> Dense(3, softmax)."""
    import keras

    keras.utils.set_random_seed(SEED)
    inp = keras.Input((4,))
    a = keras.layers.Dense(8, name="value")(inp)
    b = keras.layers.Dense(8, name="gate")(inp)
    x = _layers()["GatedMerge"](name="gated_merge")([a, b])
    out = keras.layers.Dense(3, activation="softmax", name="out")(x)
    return _compiled(inp, out, "with_gated_merge")


CASES: dict[str, Case] = {c.name: c for c in (
    Case("soft_clip", "custom Layer subclass with its own call() and a config argument "
                      "(limit * tanh(x / limit))", "sklearn:iris", soft_clip_model),
    Case("lambda_softsign", "keras.layers.Lambda wrapping a Python function "
                            "(t / (1 + abs(t)))", "sklearn:breast_cancer", lambda_softsign_model),
    Case("feature_gate", "custom Layer with a trainable weight vector "
                         "(x * sigmoid(gate), 13 gates)", "sklearn:wine", feature_gate_model),
    Case("gated_merge", "custom Layer taking two inputs (a * sigmoid(b))", "sklearn:iris",
         gated_merge_model),
)}


# ---- the endpoint ------------------------------------------------------------------------

def no_endpoint_message() -> str:
    from autopilot_lab.agents.llm_client import (
        ENV_BASE_URL,
        ENV_CONFIG,
        ENV_KEY,
        ENV_MODEL,
        config_path,
    )

    return (f"llm_agent benchmark: no LLM endpoint configured, nothing run: set "
            f"${ENV_BASE_URL} and ${ENV_MODEL} (and ${ENV_KEY} if the server wants a key), or "
            f"write {config_path()} (or point ${ENV_CONFIG} at a config file); see docs/llm.md")


def _safe_url(url: str) -> str:
    """The base URL without any user:password part."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


# ---- one case ----------------------------------------------------------------------------

def run_case(case: Case, *, max_iters: int, epochs: int | None, home: Path) -> dict[str, Any]:
    """Migrate the case's model with ``agent="auto"``; a row of figures, or of the error."""
    from autopilot_lab import api
    from autopilot_lab.store import Store

    fit = {**case.fit, **({"epochs": epochs} if epochs is not None else {})}
    row: dict[str, Any] = {"name": case.name, "custom": case.custom, "data": case.data,
                           "epochs": fit["epochs"], "max_iters": max_iters, "passed": False}
    start = time.perf_counter()
    store = Store(home / case.name)
    try:
        model = case.build()
        result = api.migrate(model, case.data, fit=fit, agent="auto", max_iters=max_iters,
                             store=store)
        row.update(_figures(result, store))
    except Exception as e:  # noqa: BLE001 - a failing endpoint or case is a row, not a crash
        row["error"] = f"{type(e).__name__}: {e}"
    finally:
        store.close()
    row["seconds"] = round(time.perf_counter() - start, 2)
    return row


def _figures(result: Any, store: Any) -> dict[str, Any]:
    report = result.report
    best = result.best
    card = best.scorecard if best else None
    gates = bool(card and card.all_gates_passed)
    llm = report.get("llm") or {}
    exchanges = store.llm_exchanges(result.run_id)
    models = sorted({ex["model"] for ex in exchanges if ex["status"] == "ok" and ex["model"]})
    errors = list(dict.fromkeys(ex["error"] or ex["status"] for ex in exchanges
                                if ex["status"] != "ok"))
    parity = (report.get("best") or {}).get("parity") or {}
    out: dict[str, Any] = {
        "status": result.status, "reason": result.reason,
        "passed": gates and result.targets_met, "gates_passed": gates,
        "targets_met": result.targets_met, "iterations": len(result.history),
        "best_iteration": best.n if best else None,
        "winner_agent": best.agent if best else None,
        "agents": [it.agent for it in result.history],
        "llm_requests": llm.get("requests", 0), "llm_failed": llm.get("failed", 0),
        "prompt_tokens": llm.get("prompt_tokens", 0),
        "completion_tokens": llm.get("completion_tokens", 0),
        "cost_usd": llm.get("cost_usd"), "llm_latency_s": llm.get("latency_s"),
        "llm_models": models,
        "parity_max_abs_error": parity.get("max_abs_error"),
    }
    if errors:
        out["llm_errors"] = errors[-3:]
    if card and not out["passed"]:
        out["open_hints"] = [h.to_text() for h in card.hints[:3]]
    return out


# ---- the results -------------------------------------------------------------------------

def summarize(rows: list[dict[str, Any]], endpoint: dict[str, Any]) -> dict[str, Any]:
    finished = [r for r in rows if "error" not in r]
    costs = [r["cost_usd"] for r in finished if r.get("cost_usd") is not None]
    used = sorted({m for r in finished for m in r.get("llm_models", [])})
    return {
        "cases": len(rows), "passed": sum(r["passed"] for r in rows),
        "errors": len(rows) - len(finished),
        "llm_won": sum(r.get("winner_agent") == "llm" for r in rows),
        "median_iterations": (statistics.median(r["iterations"] for r in finished)
                              if finished else None),
        "llm_requests": sum(r["llm_requests"] for r in finished),
        "prompt_tokens": sum(r["prompt_tokens"] for r in finished),
        "completion_tokens": sum(r["completion_tokens"] for r in finished),
        "cost_usd": round(sum(costs), 6) if costs else None,
        "seconds": round(sum(r["seconds"] for r in rows), 1),
        "model": endpoint.get("model") or (", ".join(used) if used else None),
        "models_answering": used, "base_url": endpoint.get("base_url"),
    }


def markdown(rows: list[dict[str, Any]], summary: dict[str, Any], max_iters: int) -> str:
    s = summary
    md = ["# The LLM agent on Keras models the translator cannot finish", "",
          f"`agent=\"auto\"`, at most {max_iters} iterations per case; endpoint "
          f"`{s['base_url']}`, model `{s['model'] or 'the one it serves'}`.", "",
          "| case | untranslatable part | data | passed | iterations | winner | LLM requests "
          "| tokens in / out | cost (USD) | seconds |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "error" in r:
            md.append(f"| {r['name']} | {_cell(r['custom'])} | {r['data']} | error: "
                      f"{_cell(r['error'])} | - | - | - | - | - | {r['seconds']} |")
            continue
        winner = (f"{r['winner_agent']} (iteration {r['best_iteration']})"
                  if r["winner_agent"] else "-")
        md.append(f"| {r['name']} | {_cell(r['custom'])} | {r['data']} | "
                  f"{'yes' if r['passed'] else 'no: ' + _cell(r['reason'])} | "
                  f"{r['iterations']} | {winner} | {r['llm_requests']} "
                  f"({r['llm_failed']} failed) | {r['prompt_tokens']} / "
                  f"{r['completion_tokens']} | {_usd(r['cost_usd'])} | {r['seconds']} |")
    md += ["", f"{s['passed']}/{s['cases']} passed (every gate, targets met), "
               f"{s['llm_won']} won by an LLM iteration, {s['errors']} error(s); median "
               f"{s['median_iterations']} iterations; {s['llm_requests']} LLM requests, "
               f"{s['prompt_tokens']} / {s['completion_tokens']} tokens, cost "
               f"{_usd(s['cost_usd'])}; {s['seconds']} s in all."]
    return "\n".join(md)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")[:160]


def _usd(cost: float | None) -> str:
    return "-" if cost is None else f"{cost:.4f}"


def _progress(i: int, n: int, r: dict[str, Any]) -> str:
    head = f"[{i}/{n}] {r['name']}:"
    if "error" in r:
        return f"{head} error after {r['seconds']} s: {r['error']}"
    verdict = "passed" if r["passed"] else f"not passed ({r['reason']})"
    return (f"{head} {verdict}; {r['iterations']} iteration(s), winner "
            f"{r['winner_agent']} (iteration {r['best_iteration']}); {r['llm_requests']} LLM "
            f"request(s), {r['prompt_tokens']} / {r['completion_tokens']} tokens, cost "
            f"{_usd(r['cost_usd'])}; {r['seconds']} s")


# ---- the command -------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.llm_agent", description=__doc__.split("\n\n")[0],
        epilog="The endpoint: $OPENAI_BASE_URL, $OPENAI_API_KEY, $AUTOPILOT_LLM_MODEL or the "
               "config file ($AUTOPILOT_LLM_CONFIG, else <home>/llm.toml); see docs/llm.md. "
               "Without one: a one-line message, exit 0, nothing written.")
    p.add_argument("--max-iters", type=int, default=3,
                   help="at most this many iterations per case (default 3)")
    p.add_argument("--cases", help=f"comma-separated case names (default all: "
                                   f"{', '.join(CASES)})")
    p.add_argument("--epochs", type=int, help="override each case's training epochs (5)")
    p.add_argument("--out", type=Path, help="write llm_agent.json and .md into this folder "
                                            "(default benchmarks/results/)")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    args = p.parse_args(argv)

    if args.list:
        for c in CASES.values():
            print(f"{c.name}: {c.custom}; {c.data}")
        return 0
    names = [n.strip() for n in args.cases.split(",") if n.strip()] if args.cases else \
        list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        p.error(f"unknown case(s) {', '.join(unknown) or '(none given)'}; "
                f"choose from {', '.join(CASES)}")
    from autopilot_lab.candidate import MAX_EPOCHS, MAX_ITERS

    if not 1 <= args.max_iters <= MAX_ITERS:
        p.error(f"--max-iters must be from 1 to {MAX_ITERS}, got {args.max_iters}")
    if args.epochs is not None and not 1 <= args.epochs <= MAX_EPOCHS:
        p.error(f"--epochs must be from 1 to {MAX_EPOCHS}, got {args.epochs}")

    from autopilot_lab.agents.llm_client import is_configured, redact, resolve_config

    if not is_configured():
        print(no_endpoint_message())
        return 0
    try:
        config = resolve_config()
    except (ValueError, OSError) as e:
        print(f"llm_agent benchmark: bad LLM configuration, nothing run: {e}")
        return 2
    endpoint = {**config.public(), "base_url": _safe_url(config.base_url)}
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    print(f"llm_agent benchmark: {len(names)} case(s) against {endpoint['base_url']} "
          f"(model {config.model or 'the one the endpoint serves'}), at most "
          f"{args.max_iters} iteration(s) each", flush=True)

    rows = []
    with tempfile.TemporaryDirectory(prefix="llm_agent_bench-") as tmp:
        for i, name in enumerate(names, 1):
            row = redact(run_case(CASES[name], max_iters=args.max_iters, epochs=args.epochs,
                                  home=Path(tmp)), config.api_key)
            rows.append(row)
            print(_progress(i, len(names), row), flush=True)
    summary = summarize(rows, endpoint)
    payload = redact({"agent": "auto", "max_iters": args.max_iters, "seed": SEED,
                      "endpoint": endpoint, "models": rows, "summary": summary},
                     config.api_key)
    md = redact(markdown(rows, summary, args.max_iters), config.api_key)
    jpath, mpath = results_io.write(NAME, payload, md, folder=args.out, argv=argv)
    print(f"{summary['passed']}/{summary['cases']} passed, median "
          f"{summary['median_iterations']} iterations, {summary['llm_requests']} LLM "
          f"requests; wrote {jpath} and {mpath}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
