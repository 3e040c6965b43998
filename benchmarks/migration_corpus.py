"""Migration corpus: our Keras -> PyTorch translator against tf2onnx -> onnx2torch, in the same
run, on production-style models and the keras.applications families (the smallest member of
each by default; every application builds at a small input and runs with --models NAME).

For each model and route: translated?, max abs / relative error against Keras (float32, seeded
inputs), seconds, trainable (every Keras trainable weight is a torch parameter and gets a finite
gradient), the share of weight elements that are parameters rather than buffers, iterations.
Ours also: the emitted model.py passes ruff and imports with torch alone. Each route runs in a
child process of its own with a per-model time limit, so a hang or crash is one failed row.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import multiprocessing as mp
import os
import resource
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks import corpus_models, onnx_route, results_io
from benchmarks.corpus_models import CorpusEntry

TOL = 1e-4
ROUTES = ("ours", "baseline")
BASELINE = "tf2onnx -> onnx2torch"
_IMPORT_CHECK = textwrap.dedent(
    """
    import importlib, importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "keras", "autopilot_lab", "tf_keras"):
                raise ImportError(f"blocked import of {name}")
    sys.meta_path.insert(0, Block())
    sys.path.insert(0, sys.argv[1])
    getattr(importlib.import_module("model"), sys.argv[2])()
    """
)


# ----- one model, one route (runs in the route's child process, or in-process in tests) ---------
def _blank_row(entry: CorpusEntry, route: str) -> dict[str, Any]:
    return {"name": entry.name, "kind": entry.kind, "route": route, "params": None,
            "translated": False, "success": False, "stage": "", "error": "",
            "max_abs_error": None, "rel_error": None, "keras_output_scale": None,
            "keras_sensitivity": None,
            "seconds": None, "trainable": False, "trainable_weight_fraction": None,
            "grad_nonzero_fraction": None, "keras_trainable_elements": None,
            "torch_trainable_elements": None, "source_lines": None, "iterations": 1}


def _as_list(out: Any) -> list:
    if isinstance(out, dict):
        return list(out.values())
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _keras_run(model: Any, inputs: list) -> list[np.ndarray]:
    outs = model(inputs if len(inputs) > 1 else inputs[0], training=False)
    return [np.asarray(o, dtype=np.float32) for o in _as_list(outs)]


def _keras_side(entry: CorpusEntry, row: dict[str, Any]) -> tuple[Any, list, list]:
    """Build the seeded model, its parity inputs and Keras' float32 outputs. Also how far
    Keras' own output moves when the float inputs move by one part in a million: a model
    whose output moves by more than the tolerance cannot be judged at that tolerance."""
    model = corpus_models.build(entry)
    inputs = corpus_models.random_inputs(entry, model, seed=0)
    keras_out = _keras_run(model, inputs)
    nudged = _keras_run(model, [x * np.float32(1 + 1e-6) if x.dtype.kind == "f" else x
                                for x in inputs])
    row["keras_sensitivity"] = max(float(np.abs(a - b).max()) if a.size else 0.0
                                   for a, b in zip(keras_out, nudged))
    row["params"] = int(model.count_params())
    row["keras_trainable_elements"] = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    row["keras_output_scale"] = max(float(np.abs(o).max()) for o in keras_out)
    return model, inputs, keras_out


def _parity(net: Any, inputs: list, keras_out: list, row: dict[str, Any]) -> None:
    """Max abs error and error relative to the output scale, in eval mode."""
    import torch

    net.eval()
    with torch.no_grad():
        torch_out = [o.float().numpy() for o in
                     _as_list(net(*[torch.from_numpy(np.asarray(x)) for x in inputs]))]
    if [o.shape for o in torch_out] != [o.shape for o in keras_out]:
        raise ValueError(f"output shapes differ: torch {[o.shape for o in torch_out]}, "
                         f"Keras {[o.shape for o in keras_out]}")
    err = max(float(np.abs(k - t).max()) if k.size else 0.0
              for k, t in zip(keras_out, torch_out))
    row["max_abs_error"] = err
    row["rel_error"] = err / max(1e-12, row["keras_output_scale"])


def _trainability(net: Any, inputs: list, row: dict[str, Any]) -> None:
    """A training-mode backward pass of a random projection of the outputs: every trainable
    parameter must get a finite gradient, and the trainable parameters must hold exactly as
    many elements as Keras' trainable weights (a weight frozen into a buffer fails this)."""
    import torch

    params = list(net.parameters())
    trainable = [p for p in params if p.requires_grad]
    param_elems = sum(p.numel() for p in params)
    buffer_elems = sum(b.numel() for b in net.buffers() if b.is_floating_point())
    if param_elems + buffer_elems:
        row["trainable_weight_fraction"] = param_elems / (param_elems + buffer_elems)
    row["torch_trainable_elements"] = sum(p.numel() for p in trainable)
    if not trainable:
        return
    net.train()
    net.zero_grad()
    outs = _as_list(net(*[torch.from_numpy(np.asarray(x)) for x in inputs]))
    gen = torch.Generator().manual_seed(0)
    loss = sum((o * torch.randn(o.shape, generator=gen)).sum()
               for o in outs if o.is_floating_point() and o.requires_grad)
    if not isinstance(loss, torch.Tensor):
        return  # no output depends on a parameter
    loss.backward()
    finite = all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in trainable)
    nonzero = sum(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in trainable)
    row["grad_nonzero_fraction"] = nonzero / len(trainable)
    row["trainable"] = finite and row["torch_trainable_elements"] == row[
        "keras_trainable_elements"]


def _grad_inputs(entry: CorpusEntry, model: Any) -> list:
    return corpus_models.random_inputs(entry, model, seed=1)


def ruff_check(source: str) -> tuple[bool, str]:
    """`ruff check` (E, F, W, B; line length 100) of an emitted model.py."""
    from autopilot_lab.migrate.translator import ruff_binary

    ruff = ruff_binary()
    if ruff is None:
        return False, "ruff not installed"
    proc = subprocess.run([ruff, "check", "--isolated", "--line-length", "100", "--select",
                           "E,F,W,B", "--output-format", "concise", "--stdin-filename",
                           "model.py", "-"], input=source, capture_output=True, text=True,
                          timeout=120)
    problems = [ln for ln in proc.stdout.splitlines() if ln.startswith("model.py:")]
    return proc.returncode == 0, "; ".join(problems)[:400]


def import_check(source: str, class_name: str) -> tuple[bool, str]:
    """Import the emitted model.py and build the module in a fresh interpreter in which
    tensorflow, keras and autopilot_lab cannot be imported."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "model.py").write_text(source)
        proc = subprocess.run([sys.executable, "-c", _IMPORT_CHECK, tmp, class_name],
                              capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    return proc.returncode == 0, lines[-1] if lines and proc.returncode else ""


def run_ours(entry: CorpusEntry) -> dict[str, Any]:
    """Our route: translate(), exec model.py in a fresh namespace, load the weights, compare;
    ruff and the torch-only import on the emitted source. Never raises."""
    import types

    from autopilot_lab.migrate import translate

    row = _blank_row(entry, "ours")
    row.update(ruff_ok=None, imports_torch_alone=None, unsupported=[])
    try:
        model, inputs, keras_out = _keras_side(entry, row)
        start = time.perf_counter()
        t = translate(model)
        row["seconds"] = time.perf_counter() - start
        row["source_lines"] = len(t.source.splitlines())
        row["ruff_ok"], ruff_out = ruff_check(t.source)
        row["imports_torch_alone"], import_err = import_check(t.source, t.class_name)
        if t.unsupported:
            row["unsupported"] = [f"{u.name} ({u.cls}): {u.reason}" for u in t.unsupported]
            row["stage"], row["error"] = "unsupported", "; ".join(row["unsupported"])
            return row
        mod = types.ModuleType(f"translated_{t.class_name}")
        exec(compile(t.source, "model.py", "exec"), mod.__dict__)  # our translator's output
        net = getattr(mod, t.class_name)()
        net.load_state_dict(t.torch_state_dict(), strict=True)
        row["translated"] = True
        _parity(net, inputs, keras_out, row)
        _trainability(net, _grad_inputs(entry, model), row)
        row["success"] = row["max_abs_error"] <= TOL
        checks = {"parity": row["success"], "ruff": row["ruff_ok"],
                  "torch-only import": row["imports_torch_alone"], "trainable": row["trainable"]}
        row["stage"] = next((k for k, ok in checks.items() if not ok), "")
        row["error"] = {"parity": f"max abs error {row['max_abs_error']:.3g} > {TOL}",
                        "ruff": ruff_out, "torch-only import": import_err,
                        "trainable": "a Keras weight is not a trainable parameter with a "
                                     "finite gradient", "": ""}[row["stage"]]
    except Exception as exc:
        row["stage"] = row["stage"] or "exception"
        row["error"] = _describe(exc)
    return row


def run_baseline(entry: CorpusEntry) -> dict[str, Any]:
    """The tf2onnx -> onnx2torch route with the same checks; onnxruntime on the exported graph
    tells an exporter fault from a converter one. Never raises."""
    row = _blank_row(entry, "baseline")
    row["onnx_max_abs_error"] = None
    try:
        model, inputs, keras_out = _keras_side(entry, row)
        result = onnx_route.convert(model)
        row["seconds"] = result.seconds
        if result.onnx_model is not None:
            try:
                ort_out = onnx_route.onnxruntime_outputs(result.onnx_model, inputs)
                row["onnx_max_abs_error"] = max(float(np.abs(k - np.asarray(o)).max())
                                                for k, o in zip(keras_out, ort_out))
            except Exception as exc:
                row["onnx_error"] = _describe(exc)
        if result.module is None:
            row["stage"], row["error"] = result.stage, result.error
            if result.stage == "onnx2torch" and "onnx_error" in row:
                row["stage"] = "tf2onnx"  # the exported graph itself does not run
                row["error"] = (f"exported graph fails in onnxruntime: {row['onnx_error']}; "
                                f"then onnx2torch: {result.error}")
            return row
        row["translated"] = True
        row["source_lines"] = len(result.module.code.strip().splitlines())
        _parity(result.module, inputs, keras_out, row)
        row["success"] = row["max_abs_error"] <= TOL
        if not row["success"]:
            onnx_ok = row["onnx_max_abs_error"] is not None and row["onnx_max_abs_error"] <= TOL
            row["stage"] = "onnx2torch" if onnx_ok else "tf2onnx"
            row["error"] = f"max abs error {row['max_abs_error']:.3g} > {TOL}"
        _trainability(result.module, _grad_inputs(entry, model), row)
    except Exception as exc:
        row["stage"] = row["stage"] or "exception"
        row["error"] = _describe(exc)
    return row


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    at = f" (at {Path(where[0].filename).name}:{where[0].lineno})" if where else ""
    return f"{type(exc).__name__}: {text[:400]}{at}"


# ----- child processes ----------------------------------------------------------------------
def _serve(conn: Connection, route: str, use_stub: bool, log: str, memory_gib: float) -> None:
    """A route's child process: run the models the parent sends, one row back for each. Its
    address space is capped, so a converter that balloons fails here instead of pushing the
    shared machine into the kernel's OOM killer."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    cap = int(memory_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    if use_stub:
        onnx_route.use_torchvision_stub()
    import keras

    run = run_ours if route == "ours" else run_baseline
    entries = corpus_models.by_name()
    run(entries[corpus_models.SMALL[0]])  # warm up: the first row's seconds are not start-up
    while (name := conn.recv()) is not None:
        print(f"--- {route}: {name}", flush=True)
        conn.send(run(entries[name]))
        keras.backend.clear_session(free_memory=True)


class RouteWorker:
    """One spawned child per route, reused across models (TensorFlow imports once) and replaced
    after a model that hangs past the time limit or kills it, or that leaves it holding more
    than RECYCLE_GIB of memory (an idle child would crowd the other route's)."""

    RECYCLE_GIB = 3.0

    def __init__(self, route: str, use_stub: bool, log: str, memory_gib: float):
        self.route, self.use_stub, self.log, self.memory_gib = route, use_stub, log, memory_gib
        self.proc: Any = None
        self.conn: Connection | None = None

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, daemon=True, args=(
            child, self.route, self.use_stub, self.log, self.memory_gib))
        self.proc.start()
        child.close()

    def run(self, entry: CorpusEntry, timeout: float) -> dict[str, Any]:
        if self.proc is None or not self.proc.is_alive():
            self._start()
        start = time.perf_counter()
        self.conn.send(entry.name)
        try:
            if self.conn.poll(timeout):
                row = self.conn.recv()
                if self._rss_gib() > self.RECYCLE_GIB:
                    self.close()
                return row
            why = f"timed out after {timeout:.0f} s (child process killed)"
        except EOFError:
            self.proc.join(5)
            why = (f"child process died (exit code {self.proc.exitcode}) under its "
                   f"{self.memory_gib:g} GiB address-space cap")
        self.close(kill=True)
        row = _blank_row(entry, self.route)
        row.update(stage="timeout" if "timed out" in why else "crash", error=why,
                   seconds=time.perf_counter() - start)
        return row

    def _rss_gib(self) -> float:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return 0.0
        kib = next((int(ln.split()[1]) for ln in status.splitlines()
                    if ln.startswith("VmRSS:")), 0)
        return kib / 2**20

    def close(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.conn.send(None)
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.kill()
        self.conn.close()
        self.proc = self.conn = None


# ----- report ---------------------------------------------------------------------------------
def _rate(rows: list[dict[str, Any]], key: str = "success") -> tuple[int, int]:
    return sum(bool(r[key]) for r in rows), len(rows)


def summarize(ours: list[dict], baseline: list[dict]) -> dict[str, Any]:
    """Success rates and the claims the benchmark exists to check."""
    ok, n = _rate(ours)
    both = sum(r["success"] and r["trainable"] for r in ours)
    out: dict[str, Any] = {
        "models": n, "ours_success": ok, "ours_success_rate": ok / n if n else 0.0,
        "ours_success_and_trainable": both,
        "ours_ruff_ok": _rate(ours, "ruff_ok")[0],
        "ours_imports_torch_alone": _rate(ours, "imports_torch_alone")[0],
        "ours_trainable": _rate(ours, "trainable")[0],
        "ours_max_abs_error": max((r["max_abs_error"] for r in ours
                                   if r["max_abs_error"] is not None), default=None),
    }
    claims = {"ours >= 95% within 1e-4": out["ours_success_rate"] >= 0.95,
              "every model.py passes ruff": out["ours_ruff_ok"] == n,
              "every model.py imports with torch alone": out["ours_imports_torch_alone"] == n,
              "every Keras weight a trainable parameter": out["ours_trainable"] == n}
    line = (f"Ours: {ok}/{n} ({out['ours_success_rate']:.0%}) translated within {TOL:g} "
            f"({both}/{n} with every Keras weight trainable)")
    if baseline:
        b_ok, b_n = _rate(baseline)
        b_both = sum(r["success"] and r["trainable"] for r in baseline)
        out.update(baseline_success=b_ok, baseline_success_rate=b_ok / b_n if b_n else 0.0,
                   baseline_success_and_trainable=b_both,
                   baseline_trainable=_rate(baseline, "trainable")[0])
        claims["ours above the baseline, same models, same run"] = ok / n > b_ok / b_n
        line += (f"; {BASELINE}: {b_ok}/{b_n} ({out['baseline_success_rate']:.0%}) "
                 f"({b_both}/{b_n} trainable), same models, same run")
        completed = [r for r in baseline if r["stage"] not in ("crash", "timeout")]
        if len(completed) < b_n:
            c_ok = _rate(completed)[0]
            out["baseline_success_rate_where_it_finished"] = c_ok / len(completed)
            line += (f" ({c_ok}/{len(completed)}, "
                     f"{out['baseline_success_rate_where_it_finished']:.0%}, leaving out the "
                     f"{b_n - len(completed)} models on which it crashed or timed out)")
        line += "."
    out["claims"] = claims
    out["closing_line"] = line
    return out


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _cells(r: dict[str, Any] | None) -> list[str]:
    if r is None:
        return ["n/a"] * 6
    return ["yes" if r["success"] else f"**no** ({r['stage']})", _fmt(r["max_abs_error"], ".1e"),
            _fmt(r["rel_error"], ".1e"), _fmt(r["seconds"], ".1f"),
            "yes" if r["trainable"] else "no", _fmt(r["trainable_weight_fraction"], ".1%")]


def markdown(payload: dict[str, Any]) -> str:
    s, ours = payload["summary"], payload["models"]
    base = {r["name"]: r for r in payload["baseline"]}
    md = ["# Migration corpus: our translator vs tf2onnx -> onnx2torch", "",
          f"{s['models']} Keras models (production-style models, and the smallest member of "
          "each keras.applications family, weights=None at a small input), float32, "
          f"seeded inputs, success = max abs error <= {TOL:g}. Both routes on the same models "
          "in the same run, each in its own child process "
          f"({payload['timeout_s']:.0f} s limit per model and route).", "",
          f"**{s['closing_line']}**", "",
          "| model | params | ours ok | max abs | rel | s | trainable | param share | "
          "lines | baseline ok | max abs | rel | s | trainable | param share | lines |",
          "| --- | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: | --- | ---: | ---: | "
          "---: | --- | ---: | ---: |"]
    for r in ours:
        b = base.get(r["name"])
        md.append("| " + " | ".join(
            [r["name"], _fmt(r["params"], ","), *_cells(r), _fmt(r["source_lines"], "d"),
             *_cells(b), _fmt(b and b["source_lines"], "d")]) + " |")
    md += ["", "Columns: *param share* = parameter elements / (parameter + floating buffer "
           "elements); *trainable* = every Keras trainable weight is a torch parameter and a "
           "backward pass gives each a finite gradient; *lines* = lines of model.py (ours) or "
           "of the fx GraphModule's generated code (baseline). Iterations: 1 for every row "
           "(one translation, no repair loop).", "", "## Claims", ""]
    md += [f"- {'PASS' if ok else 'FAIL'}: {claim}" for claim, ok in s["claims"].items()]
    failures = [r for r in ours + payload["baseline"] if not r["success"] or r["stage"]]
    if failures:
        md += ["", "## Failures", "", "| model | route | stage | error |",
               "| --- | --- | --- | --- |"]
        md += [f"| {r['name']} | {r['route']} | {r['stage']} | "
               f"{' '.join(r['error'].split()).replace('|', '/')[:300]} |" for r in failures]
    groups: dict[str, list[str]] = {}
    for name, why in payload["left_out"].items():
        groups.setdefault(why, []).append(name)
    md += ["", "## Left out of the default run", "", corpus_models.LEFT_OUT_WHY, ""]
    md += [f"- {', '.join(names)}: {why}" for why, names in groups.items()]
    if payload["baseline_notes"]:
        md += ["", "## Baseline notes", ""] + [f"- {n}" for n in payload["baseline_notes"]]
    md += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in payload["versions"].items()),
           "", f"Total wall time: {payload['total_seconds'] / 60:.1f} min (1-minute load "
           f"average {payload['load_average_1min']['start']:.1f} at the start, "
           f"{payload['load_average_1min']['end']:.1f} at the end, on "
           f"{os.cpu_count()} cores shared with other jobs)."]
    return "\n".join(md)


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("tensorflow-cpu", "keras", "torch", "numpy", "tf2onnx", "onnx", "onnxruntime",
                 "onnx2torch", "ruff"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _select(args: argparse.Namespace) -> list[CorpusEntry]:
    entries = corpus_models.by_name()
    names = (args.models.split(",") if args.models else
             list(corpus_models.SMALL) if args.small else
             [e.name for e in corpus_models.corpus()])
    unknown = [n for n in names if n not in entries]
    if unknown:
        raise SystemExit(f"unknown model(s) {', '.join(unknown)}; choose from: "
                         f"{', '.join(entries)}")
    return [entries[n] for n in names][: args.limit]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.migration_corpus",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", help="comma-separated model names (default: the whole corpus)")
    p.add_argument("--small", action="store_true",
                   help=f"quick subset: {', '.join(corpus_models.SMALL)}")
    p.add_argument("--limit", type=int, help="only the first N models")
    p.add_argument("--skip-baseline", action="store_true",
                   help=f"run our route only (no {BASELINE})")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds per model and route before its child is killed (default 300)")
    p.add_argument("--memory-gb", type=float, default=16.0,
                   help="address-space cap of each route's child process, GiB (default 16)")
    p.add_argument("--log", default=str(Path(tempfile.gettempdir()) / "migration_corpus.log"),
                   help="where the child processes' own output goes")
    args = p.parse_args(argv)
    entries = _select(args)
    for key, val in (("TF_CPP_MIN_LOG_LEVEL", "3"), ("CUDA_VISIBLE_DEVICES", ""),
                     ("KERAS_BACKEND", "tensorflow")):
        os.environ.setdefault(key, val)
    Path(args.log).write_text("")
    baseline_notes: list[str] = []
    routes = ["ours"] if args.skip_baseline else list(ROUTES)
    use_stub = False
    if "baseline" in routes:
        why = onnx_route.torchvision_import_error()
        use_stub = why is not None
        if use_stub:
            baseline_notes.append(
                "torchvision was replaced by a minimal stub (benchmarks/_stubs/torchvision, "
                "put on sys.path in the baseline's child process only), because `import "
                f"torchvision` fails here: {why}. onnx2torch imports it only for its "
                "NonMaxSuppression and RoiAlign converters, which no model of the corpus uses.")
        baseline_notes.append(f"tf2onnx.convert.from_keras at opset {onnx_route.OPSET}, then "
                              "onnx2torch.convert, default options; onnxruntime runs the "
                              "exported graph to tell exporter faults (stage tf2onnx) from "
                              "converter ones (stage onnx2torch).")
    workers = {route: RouteWorker(route, use_stub, args.log, args.memory_gb)
               for route in routes}
    rows: dict[str, list[dict]] = {route: [] for route in ROUTES}
    start = time.perf_counter()
    load = os.getloadavg()[0]
    bar = tqdm(entries, unit="model", dynamic_ncols=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` ends the children
    try:
        for entry in bar:
            bar.set_postfix_str(entry.name)
            for route in routes:
                rows[route].append(workers[route].run(entry, args.timeout))
            mark = " ".join(f"{route} {'ok' if rows[route][-1]['success'] else 'FAIL'}"
                            for route in routes)
            bar.write(f"{entry.name:<30} {mark}")
    finally:
        for worker in workers.values():
            worker.close(kill=True)
    for o, b in zip(rows["ours"], rows["baseline"]):
        if o["keras_output_scale"] and b["keras_output_scale"] and not np.isclose(
                o["keras_output_scale"], b["keras_output_scale"], rtol=1e-5):
            baseline_notes.append(f"{o['name']}: the two child processes built different Keras "
                                  "outputs (seeded build not reproducible)")
    payload = {"tolerance": TOL, "timeout_s": args.timeout, "memory_cap_gib": args.memory_gb,
               "routes": {"ours": "autopilot_lab."
               "migrate.translate", "baseline": BASELINE}, "models": rows["ours"],
               "baseline": rows["baseline"], "baseline_notes": baseline_notes,
               "left_out": corpus_models.APPLICATIONS_LEFT_OUT,
               "application_sizes": {e.name: corpus_models.APPLICATION_SIZES[e.name]
                                     for e in entries if e.kind == "application"},
               "versions": _versions(), "total_seconds": time.perf_counter() - start,
               "load_average_1min": {"start": load, "end": os.getloadavg()[0]}}
    payload["summary"] = summarize(rows["ours"], rows["baseline"])
    jpath, mpath = results_io.write("migration_corpus", payload, markdown(payload))
    print(payload["summary"]["closing_line"])
    print(f"wrote {jpath} and {mpath}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
