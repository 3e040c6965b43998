"""The console's REST API against a real Jupyter server: every endpoint, auth, 4xx on bad
input, path traversal refused, keys never served, ETags, and Stop / Resume for real."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import pytest

from . import DATA, EXAMPLE, LEAKED_KEY, TARGET, Server, seed_runs

pytest.importorskip("jupyter_server", reason="pip install 'autopilot-lab[console]'")

API = "/autopilot/api"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A server over a store of seeded runs, and a benchmark sweep beside it."""
    tmp = tmp_path_factory.mktemp("console-api")
    home = tmp / "home"
    seeded = seed_runs(home)
    bench = tmp / "bench"
    bench.mkdir()
    (bench / "ladder_cost.json").write_text(json.dumps({
        "rows": [{"candidate": "fails tier 0", "seconds": 0.02}],
        "command": "python -m benchmarks.ladder_cost", "finished_at": "2026-01-01T00:00:00Z",
        "machine": {"platform": "linux", "cpus": 2}}))
    (bench / "ladder_cost.md").write_text("| candidate | seconds |\n")
    root = tmp / "root"
    root.mkdir()
    server = Server("jupyter_server", tmp, home, root,
                    f"--AutopilotConsole.benchmarks_dir={bench}")
    yield server, seeded
    server.close()


def ok(server: Server, path: str):
    status, _, body = server.call("GET", API + path)
    assert status == 200, (path, status, body)
    return body


def refused(server: Server, method: str, path: str, status: int, words: str, body=None):
    got, _, answer = server.call(method, API + path, body)
    assert got == status, (path, got, answer)
    assert words in answer["message"], answer
    return answer


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_every_endpoint_needs_the_token(env):
    server, seeded = env
    run = f"/runs/{seeded.finished}"
    for method, path in [("GET", ""), ("GET", "/runs"), ("GET", run), ("GET", f"{run}/iterations"),
                         ("GET", f"{run}/iterations/1/code"), ("GET", f"{run}/diff?from=1&to=2"),
                         ("GET", f"{run}/artifacts"), ("GET", f"{run}/artifacts/report.md"),
                         ("GET", f"{run}/llm"), ("GET", f"{run}/events"),
                         ("GET", f"{run}/decisions"), ("POST", f"{run}/decisions"),
                         ("POST", f"{run}/stop"), ("POST", f"{run}/resume"),
                         ("GET", "/benchmarks"), ("GET", "/benchmarks/ladder_cost")]:
        for token in (None, "wrong-token"):
            status, _, body = server.call(method, API + path, {} if method == "POST" else None,
                                          token=token)
            assert status == 403, (method, path, token, status, body)


def test_a_forged_xsrf_pair_without_the_token_is_refused_by_authentication(env):
    """A request that brings its own matching ``_xsrf`` cookie and header passes Jupyter's
    XSRF check: what refuses it must be the handler's authentication, on every POST."""
    server, seeded = env
    forged = {"Cookie": "_xsrf=6f776e", "X-XSRFToken": "6f776e"}
    run = f"/runs/{seeded.finished}"
    for path in (f"{run}/decisions", f"{run}/stop", f"{run}/resume"):
        status, _, body = server.call("POST", API + path, {}, token=None, headers=forged)
        message = json.dumps(body) if not isinstance(body, bytes) else body.decode(
            errors="replace")
        assert status == 403 and "xsrf" not in message.lower(), (path, status, message)


def test_runs_list_filters_and_pages(env):
    server, seeded = env
    page = ok(server, "/runs")
    assert [r["id"] for r in page["runs"]] == [seeded.interrupted, seeded.stopped,
                                               seeded.finished]
    by_id = {r["id"]: r for r in page["runs"]}
    assert by_id[seeded.interrupted]["status"] == "interrupted"  # its process is gone
    finished = by_id[seeded.finished]
    assert finished["model"] == "TabularMLP" and finished["data"] == DATA
    assert (finished["iterations_done"], finished["best_score"]) == (3, 4.9333)
    assert finished["duration_s"] >= 0 and finished["controls"]["resume"] is True
    assert by_id[seeded.interrupted]["duration_s"] is not None  # ended when marked
    assert [r["id"] for r in ok(server, "/runs?status=finished")["runs"]] == [seeded.finished]
    assert ok(server, "/runs?objective=migrate")["runs"] == []
    assert [r["id"] for r in ok(server, f"/runs?text={seeded.stopped[-4:]}")["runs"]] == \
        [seeded.stopped]
    first = ok(server, "/runs?limit=1")
    assert len(first["runs"]) == 1 and first["next_offset"] == 1
    last = ok(server, "/runs?limit=2&offset=2")
    assert [r["id"] for r in last["runs"]] == [seeded.finished] and last["next_offset"] is None
    refused(server, "GET", "/runs?status=bogus", 400, "status must be one of")
    refused(server, "GET", "/runs?limit=abc", 400, "limit must be an integer")
    refused(server, "GET", "/runs?limit=0", 400, "limit must be between 1 and 200")
    refused(server, "GET", "/runs?offset=-1", 400, "offset must be at least 0")


def test_run_detail_with_its_errors(env):
    server, seeded = env
    run = ok(server, f"/runs/{seeded.finished}")
    assert run["status"] == "finished" and run["reason"] == "iteration budget of 3 spent"
    assert run["spec"]["target"] == TARGET and "source" not in run["spec"]
    assert run["llm"]["requests"] == 2 and run["llm"]["failed"] == 1
    messages = [(e["source"], e["iteration"], e["message"]) for e in run["errors"]]
    assert ("sandbox: metric", 2, "timeout (wall limit)") in messages
    assert ("LLM tiny", 2, "auth: 401: invalid key [redacted]") in messages
    refused(server, "GET", "/runs/r-nope", 404, "no run 'r-nope'")


def test_iterations_with_ladder_sandbox_outcomes_hints_and_decisions(env):
    server, seeded = env
    its = ok(server, f"/runs/{seeded.finished}/iterations")["iterations"]
    assert [it["n"] for it in its] == [1, 2, 3]
    first, second, third = its
    assert [c["check"] for c in first["checks"]] == ["static", "build", "trainability"]
    assert first["skipped"] == ["stability", "metric"] and first["gates_passed"] == 2
    assert [(h["kind"], h["priority"], h["decision"]) for h in first["hints"]] == \
        [("NAN_LOSS", "P1", "accept")]
    metric = second["checks"][-1]
    assert metric["sandbox"] == {"status": "timeout", "limit": "wall", "exit_code": None,
                                 "signal": 9}
    assert [(h["kind"], h["decision"]) for h in second["hints"]] == [("RESOURCE_LIMIT", "reject")]
    assert third["score"] == 4.9333 and third["hints"][0]["kind"] == "METRIC_GAP"
    assert third["notes"] == {"repair": "shorter_schedule"}


def test_code_and_diff_between_iterations(env):
    server, seeded = env
    run = f"/runs/{seeded.finished}"
    code = ok(server, f"{run}/iterations/3/code")
    assert code["entry"] == "TabularMLP" and "hidden: int = 64" in code["files"]["model.py"]
    assert code["recipe"]["epochs"] == 40
    diff = ok(server, f"{run}/diff?from=1&to=3")
    (model,) = diff["files"]
    assert model["status"] == "changed"
    assert "-    def __init__(self, n_features: int, n_outputs: int, hidden: int = 32" in \
        model["diff"]
    assert "+    def __init__(self, n_features: int, n_outputs: int, hidden: int = 64" in \
        model["diff"]
    assert {c["key"]: (c["from"], c["to"]) for c in diff["recipe"]} == \
        {"lr": (10.0, 0.1), "epochs": (1, 40)}
    same = ok(server, f"{run}/diff?from=1&to=2")
    assert same["files"][0]["status"] == "same" and same["files"][0]["diff"] == ""
    refused(server, "GET", f"{run}/diff?from=1", 400, "give both iterations")
    refused(server, "GET", f"{run}/diff?from=one&to=2", 400, "from must be an integer")
    refused(server, "GET", f"{run}/diff?from=1&to=9", 404, "no candidate for iteration 9")
    refused(server, "GET", f"{run}/iterations/x/code", 400, "iteration must be an integer")
    refused(server, "GET", f"{run}/iterations/0/code", 400, "iteration must be at least 1")
    refused(server, "GET", f"{run}/iterations/7/code", 404, "no candidate for iteration 7")


def test_artifacts_download_and_traversal_refused(env):
    server, seeded = env
    run = f"/runs/{seeded.finished}"
    listed = {a["path"]: a for a in ok(server, f"{run}/artifacts")["artifacts"]}
    assert {"iter_1/model.py", "best/model.py", "report.md", "report.json"} <= set(listed)
    status, head, body = server.call("GET", f"{API}{run}/artifacts/report.md")
    assert status == 200 and body == b"# Report\n\nbest: iteration 3\n"
    assert head["Content-Disposition"] == 'attachment; filename="report.md"'
    assert head["Content-Type"].startswith("text/plain")
    status, _, body = server.call("GET", f"{API}{run}/artifacts/best/model.py")
    assert status == 200 and b"hidden: int = 64" in body
    for path in ["../../autopilot.db", quote("../../autopilot.db", safe=""),
                 "iter_1/../../../autopilot.db", quote("/etc/hostname", safe=""),
                 "outside.txt"]:  # the last one is a symlink inside the folder to /etc
        refused(server, "GET", f"{run}/artifacts/{path}", 403, "leads outside the run folder")
    refused(server, "GET", f"{run}/artifacts/scratch/unrecorded.txt", 404, "has no artifact")


def test_llm_exchanges_never_carry_a_key(env):
    server, seeded = env
    status, _, raw = server.call("GET", f"{API}/runs/{seeded.finished}/llm",
                                 headers={"Accept": "application/json"})
    assert status == 200
    text = json.dumps(raw)
    assert LEAKED_KEY not in text and "user:" not in text
    answered, refused_ = raw["exchanges"]
    assert answered["request"]["headers"]["Authorization"] == "[redacted]"
    assert answered["request"]["settings"] == {"api_key": "[redacted]", "timeout": 30}
    assert answered["request"]["body"]["max_tokens"] == 256
    assert answered["base_url"] == "https://llm.example/v1"
    assert refused_["status"] == "auth" and refused_["error"] == "401: invalid key [redacted]"
    assert raw["totals"]["prompt_tokens"] == 120
    only = ok(server, f"/runs/{seeded.finished}/llm?iteration=1")
    assert only["exchanges"] == []


def test_events_after_a_sequence_number(env):
    server, seeded = env
    run = f"/runs/{seeded.finished}"
    every = ok(server, f"{run}/events")
    types = [e["type"] for e in every["events"]]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    last = every["last_seq"]
    tail = ok(server, f"{run}/events?after={last - 1}")
    assert [e["seq"] for e in tail["events"]] == [last]
    assert ok(server, f"{run}/events?after={last}")["events"] == []
    refused(server, "GET", f"{run}/events?after=-3", 400, "after must be at least 0")


def test_etag_polling_and_decisions(env):
    server, seeded = env
    path = f"{API}/runs/{seeded.finished}/iterations"
    status, head, _ = server.call("GET", path)
    etag = head["Etag"]
    status, _, _ = server.call("GET", path, headers={"If-None-Match": etag})
    assert status == 304
    run = f"/runs/{seeded.finished}"
    key = ok(server, f"{run}/iterations")["iterations"][2]["hints"][0]["key"]
    status, _, body = server.call("POST", f"{API}{run}/decisions",
                                  {"iteration": 3, "hint_key": key, "decision": "reject"})
    assert status == 201 and body["decisions"][-1]["decision"] == "reject"
    status, _, body = server.call("GET", path, headers={"If-None-Match": etag})
    assert status == 200 and body["iterations"][2]["hints"][0]["decision"] == "reject"
    refused(server, "POST", f"{run}/decisions", 400, "decision must be one of",
            {"iteration": 3, "hint_key": key, "decision": "maybe"})
    refused(server, "POST", f"{run}/decisions", 400, "has no hint with key",
            {"iteration": 3, "hint_key": "NOPE", "decision": "accept"})
    refused(server, "POST", f"{run}/decisions", 400, "iteration must be the number",
            {"iteration": "3", "hint_key": key, "decision": "accept"})
    refused(server, "POST", f"{run}/decisions", 400, "not JSON", b"{nope")
    refused(server, "POST", f"{run}/decisions", 400, "must be a JSON object", [1])


def test_benchmark_sweeps(env):
    server, _ = env
    (sweep,) = ok(server, "/benchmarks")["sweeps"]
    assert sweep["name"] == "ladder_cost" and sweep["markdown"] is True
    one = ok(server, "/benchmarks/ladder_cost")
    assert one["result"]["rows"][0]["seconds"] == 0.02
    assert one["markdown"].startswith("| candidate")
    refused(server, "GET", "/benchmarks/.hidden", 400, "must be letters")
    refused(server, "GET", "/benchmarks/nothing", 404, "no benchmark sweep 'nothing'")


def test_resume_then_stop_in_the_server(env):
    server, seeded = env
    run = f"/runs/{seeded.stopped}"
    refused(server, "POST", f"{run}/resume", 400, "max_iters must exceed the 1 iterations",
            {"max_iters": 1})
    refused(server, "POST", f"{run}/resume", 400, "max_iters must be a positive integer",
            {"max_iters": "3"})
    refused(server, "POST", f"{run}/stop", 409, "is not running; its status is stopped")
    refused(server, "POST", f"/runs/{seeded.finished}/resume", 400,
            "spent its budget of 3 iterations; give max_iters above 3")
    seq = ok(server, f"{run}/events")["last_seq"]
    status, _, body = server.call("POST", f"{API}{run}/resume", {"max_iters": 3})
    assert status == 202 and body["where"] == "this server", body
    status, _, body = server.call("POST", f"{API}{run}/stop", {})
    assert status == 202 and body["where"] == "this server", body
    ended = wait_for(lambda: [e for e in ok(server, f"{run}/events?after={seq}")["events"]
                              if e["type"] == "run_finished"], 90, "the resumed run to end")
    assert ended[0]["data"]["status"] == "stopped"
    assert ended[0]["data"]["reason"] == "stopped by the user"
    assert ok(server, run)["status"] == "stopped"


def test_stop_refused_for_a_run_of_another_process(env):
    """A run going on in this test process: neither the server nor one of its kernels."""
    from autopilot_lab.events import Event
    from autopilot_lab.store import Store

    server, _ = env
    with Store(server.home) as store:
        run_id = store.create_run("improve", {"entry": "Net"}, "rules", 2)
        store.subscriber(Event("run_started", run_id, {}))
        detail = ok(server, f"/runs/{run_id}")
        assert detail["controls"]["stop"] is False and "note" in detail["controls"]
        refused(server, "POST", f"/runs/{run_id}/stop", 409,
                "neither this server nor one of its kernels")
        refused(server, "POST", f"/runs/{run_id}/resume", 409, "is running")
        store.set_status(run_id, "failed", "test over")


def test_stop_a_run_in_a_kernel_of_this_server(env):
    """A run started in a notebook kernel (interactive: it waits after iteration 1) is
    stopped from the console through the kernel's own registry of runs."""
    from jupyter_client import BlockingKernelClient

    server, _ = env
    status, _, kernel = server.call("POST", "/api/kernels", {"name": "python3"})
    assert status == 201, kernel
    client = BlockingKernelClient(connection_file=str(
        server.runtime / f"kernel-{kernel['id']}.json"))
    client.load_connection_file()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)
        source = EXAMPLE.read_text().replace("import torch\n", "import socket\nimport torch\n")
        reply = client.execute_interactive(
            "from autopilot_lab import jupyter as apj\n"
            f"run = apj.start('improve', {source!r}, {DATA!r}, target={TARGET!r}, "
            "max_iters=3, interactive=True)\nprint(run.run_id)", timeout=120)
        assert reply["content"]["status"] == "ok", reply["content"]
        runs = wait_for(lambda: [r for r in ok(server, "/runs?status=running")["runs"]
                                 if r["iterations_done"] == 1], 120,
                        "the kernel's run to score iteration 1")
        (run,) = runs
        assert run["controls"] == {"stop": True, "resume": False,
                                   "where": f"kernel {kernel['id']}"}
        status, _, body = server.call("POST", f"{API}/runs/{run['id']}/stop", {})
        assert status == 202 and body["where"] == f"kernel {kernel['id']}", body
        done = wait_for(lambda: ok(server, f"/runs/{run['id']}")["status"] != "running", 90,
                        "the kernel's run to stop") and ok(server, f"/runs/{run['id']}")
        assert (done["status"], done["reason"]) == ("stopped", "stopped by the user")
    finally:
        client.stop_channels()
        server.call("DELETE", f"/api/kernels/{kernel['id']}")


def test_no_store_yet_is_an_empty_list(tmp_path):
    """A server started where no run was ever made lists none and creates nothing."""
    home = tmp_path / "nothing-here"
    server = Server("jupyter_server", tmp_path, home, tmp_path)
    try:
        page = ok(server, "/runs")
        assert page["runs"] == [] and page["home"] == str(home)
        refused(server, "GET", "/runs/r-1", 404, "no run store")
        assert not home.exists()
    finally:
        server.close()
