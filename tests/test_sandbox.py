"""The sandbox contains hostile candidate code and reports precisely what happened."""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
import threading
from pathlib import Path

import pytest

from autopilot_lab.sandbox import (
    MAX_RESULT_BYTES,
    UID_RANGE,
    Limits,
    Outcome,
    Sandbox,
    _processes,
    run_owner,
)

JOBS = "tests.sandbox_jobs"
LAYERS = Sandbox.available_layers()
SMALL = Limits(wall_s=5, memory_mb=256, processes=32, output_bytes=20_000)


def needs(*layers: str):
    """Skip where this host does not allow one of ``layers``."""
    off = [f"{name}: {LAYERS[name]}" for name in layers if LAYERS[name] is not True]
    return pytest.mark.skipif(bool(off), reason="; ".join(off))


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(SMALL)


def run_candidate(sandbox: Sandbox, source: str, limits: Limits | None = None,
                  **args) -> Outcome:
    """Run ``main(**args)`` of a candidate module written into the scratch folder."""
    return sandbox.run(f"{JOBS}:run_module", {"module": "candidate", "args": args},
                       files={"candidate.py": source}, limits=limits)


def our_sandbox_processes() -> list[int]:
    """Live processes of a sandbox uid started by this process (others may run sandboxes too)."""
    return [p.pid for p in _processes()
            if p.uid in UID_RANGE and not p.zombie and run_owner(p.pid) == os.getpid()]


def test_available_layers_names_every_layer() -> None:
    assert {"bwrap", "uid_drop", "net_namespace", "pid_namespace", "memory_cgroup",
            "pids_cgroup", "rlimits", "rss_polling", "gpu_devices"} <= set(LAYERS)
    for name, value in LAYERS.items():
        assert value is True or (isinstance(value, str) and value), name


def test_normal_job_returns_its_json_result(sandbox: Sandbox) -> None:
    value = {"a": [1, 2.5, None, "x"], "nested": {"ok": True}}
    out = sandbox.run(f"{JOBS}:echo", {"value": value})
    assert out.status == "ok", out.describe()
    assert out.result == value
    assert out.exit_code == 0 and out.signal is None and out.limit is None
    assert "rlimits" in out.layers and out.describe().startswith("returned a result")


def test_job_that_raises_is_an_error_with_type_and_message(sandbox: Sandbox) -> None:
    out = sandbox.run(f"{JOBS}:fail", {"message": "boom 42"})
    assert out.status == "error" and out.limit is None
    assert out.error["type"] == "ValueError"
    assert out.error["message"] == "boom 42"
    assert "sandbox_jobs.py" in out.error["traceback"]
    assert out.describe().startswith("raised ValueError: boom 42")


def test_result_that_is_not_json_is_an_error(sandbox: Sandbox) -> None:
    out = sandbox.run(f"{JOBS}:unjsonable", {})
    assert out.status == "error"
    assert out.error["type"] == "ResultNotJSON"


def test_large_results_arrive_and_too_large_ones_are_errors(sandbox: Sandbox) -> None:
    big = sandbox.run(f"{JOBS}:big_result", {"n": 4 << 20})
    assert big.status == "ok" and len(big.result) == 4 << 20
    too_big = sandbox.run(f"{JOBS}:big_result", {"n": MAX_RESULT_BYTES + 1})
    assert too_big.status == "error" and too_big.error["type"] == "ResultTooLarge"


def test_sys_exit_in_candidate_is_an_error(sandbox: Sandbox) -> None:
    out = run_candidate(sandbox, "import sys\ndef main():\n    sys.exit(139)\n")
    assert out.status == "error" and out.error["type"] == "SystemExit"


def test_infinite_loop_is_killed_at_the_wall_time_limit(sandbox: Sandbox) -> None:
    out = run_candidate(sandbox, "def main():\n    while True:\n        pass\n",
                        Limits(wall_s=1.5, memory_mb=256))
    assert (out.status, out.limit, out.signal) == ("timeout", "wall", 9)
    assert 1.5 <= out.wall_s < 3.5
    assert out.describe().startswith("killed after")


MEMORY_BOMB = """
def main():
    hog = []
    while True:
        hog.append(b"x" * (32 << 20))
"""


def test_memory_bomb_is_stopped_as_oom(sandbox: Sandbox) -> None:
    out = run_candidate(sandbox, MEMORY_BOMB)
    assert (out.status, out.limit) == ("oom", "memory"), out.describe()
    assert out.wall_s < 5


FORK_BOMB = """
import os, time
def main():
    while True:
        try:
            os.fork()
        except OSError:
            time.sleep(0.001)
"""


@needs("uid_drop")
def test_fork_bomb_is_stopped_and_leaves_no_process(sandbox: Sandbox) -> None:
    out = run_candidate(sandbox, FORK_BOMB, Limits(wall_s=10, memory_mb=512, processes=16))
    assert out.status in ("crashed", "error") and out.limit == "processes", out.describe()
    assert out.wall_s < 9
    assert our_sandbox_processes() == []


def test_segfault_is_a_crash_with_signal_11(sandbox: Sandbox) -> None:
    out = run_candidate(sandbox, "import ctypes\ndef main():\n    ctypes.string_at(0)\n")
    assert (out.status, out.signal, out.exit_code) == ("crashed", 11, None)
    assert "Segmentation fault" in out.stderr  # faulthandler's traceback
    assert "SIGSEGV" in out.describe()


def test_os_exit_zero_is_a_crash_not_success(sandbox: Sandbox) -> None:
    out = run_candidate(sandbox, "import os\ndef main():\n    os._exit(0)\n")
    assert (out.status, out.exit_code, out.result) == ("crashed", 0, None)
    assert "without reporting a result" in out.describe()


KILL_PARENTS = """
import os, signal
def main(caller):
    for pid in (caller, os.getppid()):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return "survived"
"""


@needs("uid_drop")
def test_candidate_cannot_kill_the_caller(sandbox: Sandbox) -> None:
    out = run_candidate(sandbox, KILL_PARENTS, caller=os.getpid())
    # Killing its own harness is allowed; reaching this process is not.
    assert out.status in ("ok", "crashed"), out.describe()
    assert sandbox.run(f"{JOBS}:echo", {"value": 1}).result == 1


FLOOD = """
import sys
def main():
    chunk = "y" * (1 << 20)
    for _ in range(100):
        sys.stdout.write(chunk)
    return "finished"
"""


def test_output_flood_is_truncated_and_killed(sandbox: Sandbox) -> None:
    out = run_candidate(sandbox, FLOOD, Limits(wall_s=20, memory_mb=256, output_bytes=10_000))
    assert (out.status, out.limit) == ("crashed", "output"), out.describe()
    assert out.output_truncated and "bytes cut by the sandbox" in out.stdout
    assert len(out.stdout) < 11_000
    assert out.stdout.startswith("y" * 100) and out.stdout.endswith("y" * 100)


WRITE_OUTSIDE = """
def main(paths):
    done = []
    for path in paths:
        try:
            with open(path, "w") as f:
                f.write("escaped")
            done.append(path)
        except OSError:
            pass
    with open("inside.txt", "w") as f:
        f.write("fine")
    return done
"""


@needs("readonly_fs")
def test_writes_outside_the_scratch_folder_do_not_reach_the_host(sandbox: Sandbox) -> None:
    token = secrets.token_hex(4)
    targets = [Path(__file__).parent / f"escape-{token}.txt", Path(f"/tmp/escape-{token}.txt")]
    out = run_candidate(sandbox, WRITE_OUTSIDE, paths=[str(p) for p in targets])
    try:
        assert out.status == "ok", out.describe()
        assert out.result == [str(targets[1])]  # the child's /tmp is its own, and writable
        assert [p for p in targets if p.exists()] == []
    finally:
        for p in targets:
            p.unlink(missing_ok=True)


CONNECT = """
import socket
def main(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError as exc:
        return f"failed: {exc}"
    return "connected"
"""


@needs("net_namespace")
def test_no_connection_to_host_listeners(sandbox: Sandbox) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        out = run_candidate(sandbox, CONNECT, port=server.getsockname()[1])
        with pytest.raises(BlockingIOError):
            server.accept()
    assert out.status == "ok" and out.result.startswith("failed"), out.result


def test_secrets_in_the_environment_do_not_leak(sandbox: Sandbox,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-123")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp-secret-456")
    out = sandbox.run(f"{JOBS}:environment", {})
    env = out.result["env"]
    assert "OPENAI_API_KEY" not in env and "GITHUB_TOKEN" not in env
    assert not any("secret" in value for value in env.values())
    assert env["HOME"] == out.result["workdir"] == out.result["cwd"]
    assert env["PYTHONHASHSEED"] == "0" and env["OMP_NUM_THREADS"] == "1"
    assert env["MALLOC_ARENA_MAX"] == "2"


def test_torch_imports_under_the_default_limits() -> None:
    out = Sandbox().run(f"{JOBS}:torch_sum", {})
    assert out.status == "ok", out.describe() + out.stderr
    assert out.result == {"sum": 45.0, "threads": 1}


READ_INPUT = """
from pathlib import Path
def main():
    text = Path("data/input.txt").read_text()
    try:
        Path("data/input.txt").write_text("changed")
        wrote = True
    except OSError:
        wrote = False
    return {"text": text, "wrote": wrote, "cwd": str(Path.cwd())}
"""


def test_inputs_are_read_only_and_the_scratch_folder_is_removed(sandbox: Sandbox,
                                                                tmp_path: Path) -> None:
    source = tmp_path / "input.txt"
    source.write_text("dataset")
    out = sandbox.run(f"{JOBS}:run_module", {"module": "candidate"},
                      files={"candidate.py": READ_INPUT}, inputs={"data/input.txt": source})
    assert out.status == "ok", out.describe()
    assert out.result["text"] == "dataset" and out.result["wrote"] is False
    assert source.read_text() == "dataset"
    assert not Path(out.result["cwd"]).exists()


def test_file_size_limit(sandbox: Sandbox) -> None:
    source = "def main():\n    open('big.bin', 'wb').write(bytes(3 << 20))\n"
    out = run_candidate(sandbox, source, Limits(wall_s=5, memory_mb=256, file_size_mb=1))
    assert (out.status, out.limit) == ("error", "file_size"), out.describe()


def test_concurrent_runs(sandbox: Sandbox) -> None:
    results: list[Outcome] = []
    threads = [threading.Thread(target=lambda i=i: results.append(
        sandbox.run(f"{JOBS}:echo", {"value": i}))) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(o.result for o in results) == [0, 1, 2]


def test_process_fallback_handles_a_job_and_a_timeout() -> None:
    fallback = Sandbox(Limits(wall_s=1.5, memory_mb=512), isolation="process")
    ok = fallback.run(f"{JOBS}:echo", {"value": [3]})
    assert ok.status == "ok" and ok.result == [3], ok.describe()
    assert "bwrap" not in ok.layers and "rlimits" in ok.layers
    loop = run_candidate(fallback, "def main():\n    while True:\n        pass\n")
    assert (loop.status, loop.limit) == ("timeout", "wall")


@needs("uid_drop")
def test_without_cgroups_rlimits_and_polling_still_stop_bombs() -> None:
    """What a host without writable cgroups gets: RLIMIT_DATA, RSS polling, RLIMIT_NPROC."""
    bare = Sandbox(Limits(wall_s=5, memory_mb=256, processes=16))
    bare._host = dataclasses.replace(bare._host, memory=None, pids=None)
    heap = run_candidate(bare, MEMORY_BOMB)
    assert (heap.status, heap.limit) == ("oom", "memory") and heap.error["type"] == "MemoryError"
    assert {"rlimit_data", "rss_polling"} <= set(heap.layers)
    shared = "import mmap\ndef main():\n    m = mmap.mmap(-1, 1 << 30)\n" \
             "    for i in range(0, 1 << 30, 4096):\n        m[i] = 1\n"
    polled = run_candidate(bare, shared)  # shared memory is not in RLIMIT_DATA
    assert (polled.status, polled.limit, polled.error) == ("oom", "memory", None)
    bomb = run_candidate(bare, FORK_BOMB)
    assert (bomb.status, bomb.limit) == ("crashed", "processes"), bomb.describe()
    assert our_sandbox_processes() == []


def test_runs_leave_no_cgroups_or_scratch_folders(sandbox: Sandbox) -> None:
    sandbox.run(f"{JOBS}:echo", {"value": 0})
    base = sandbox._base
    assert list(base.glob(f"run-{os.getpid()}-*")) == []
    for ctl in (sandbox._host.memory, sandbox._host.pids):
        if ctl:
            assert list(ctl.parent.glob(f"autopilot-{os.getpid()}-*")) == []


def test_bad_arguments_are_refused(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError, match="package.module:function"):
        sandbox.run("no_function", {})
    with pytest.raises(ValueError, match="inside the scratch folder"):
        sandbox.run(f"{JOBS}:echo", {"value": 1}, files={"../x.py": ""})
    with pytest.raises(TypeError, match="not JSON"):
        sandbox.run(f"{JOBS}:echo", {"value": object()})
    with pytest.raises(ValueError, match="isolation"):
        Sandbox(isolation="docker")
