"""The verifier's integrity against a hostile candidate that knows our code (issue 13).

Each attack runs through the real loop (an improve run whose agent proposes the hostile
sources, then the honest one) and through ``autopilot verify`` (a migrated candidate folder
with the attack in its model.py). For each: the score equals the honest score of the same
model, or the candidate is rejected with a P1 hint; the loop goes on; the caller lives.
Candidate code reaches ``os`` and ``sys`` as ``torch.os`` / ``torch.sys`` (no import
statement for the static check to see), and the harness' modules through ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autopilot_lab import api
from autopilot_lab.cli import main as cli_main
from autopilot_lab.hints import HintKind, Priority
from autopilot_lab.objectives.improve import ImproveObjective
from autopilot_lab.sandbox import Limits
from tests.test_loop_hostile import GOOD, ScriptedAgent, _hostile

ROOT = Path(__file__).resolve().parents[1]

# A perfect result as the old protocol spelled it, written straight to the result pipe.
FORGE = ("s = torch.sys\n"
         "line = b'{\"status\": \"ok\", \"result\": {\"metrics\": {\"test\": {\"roc_auc\": 1.0, "
         "\"accuracy\": 1.0}}, \"output_type\": \"Tensor\", \"shape\": [8, 3], \"dtype\": "
         "\"float32\", \"floating\": true, \"finite\": true, \"n_parameters\": 1}}\\n'\n"
         "torch.os.write(int(s.argv[1]), line)\n"
         "torch.os._exit(0)")
# The line whose missing 'shape' crashed the parent (KeyError), then the harness' own line.
MALFORMED = ("torch.os.write(int(torch.sys.argv[1]), "
             "b'{\"status\": \"ok\", \"result\": {\"output_type\": \"Tensor\"}}\\n')")
PATCH_METRICS = (
    "m = __import__('autopilot_lab.metrics', fromlist=['all_metrics'])\n"
    "perfect = {'roc_auc': 1.0, 'accuracy': 1.0, 'balanced_accuracy': 1.0, 'log_loss': 0.0,\n"
    "           'rmse': 0.0, 'mae': 0.0, 'r2': 1.0}\n"
    "m.all_metrics = lambda kind, y, pred: dict(perfect)")
READ_LABELS = ("z = torch.sys.modules['numpy'].load('data.npz')\n"
               "raise RuntimeError('labels seen: ' + ' '.join(sorted(\n"
               "    k for k in z.files if k.startswith('y'))))")
# Invert every prediction, then make every comparison the old harness made in the sandbox
# (parity's differences, the metrics, the loss) report a perfect match.
INVERT_AND_PATCH = (
    "self.register_forward_hook(lambda mod, inp, out: out.flip(-1))\n"
    "p = __import__('autopilot_lab.harness.parity', fromlist=['x'])\n"
    "p._diff = lambda a, b: {'max_abs': 0.0, 'rel': 0.0, 'scale': 1.0}\n"
    "m = __import__('autopilot_lab.metrics', fromlist=['all_metrics'])\n"
    "m.all_metrics = lambda kind, y, pred: {'roc_auc': 1.0, 'accuracy': 1.0, 'log_loss': 0.0}")


@pytest.fixture
def planted(tmp_path):
    """A world-readable secret file and a world-connectable unix socket outside /tmp."""
    folder = Path("/var/tmp") / f"autopilot-planted-{secrets.token_hex(4)}"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    secret = folder / "secret.txt"
    secret.write_text("PLANTED-SECRET-7f3a")
    os.chmod(secret, 0o644)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(folder / "agent.sock"))
    os.chmod(folder / "agent.sock", 0o777)
    listener.listen(4)
    yield {"secret": secret, "socket": folder / "agent.sock"}
    listener.close()
    shutil.rmtree(folder, ignore_errors=True)


def _attacks(planted: dict) -> dict[str, str]:
    return {
        "forged result line": FORGE,
        "malformed result message": MALFORMED,
        "read labels": READ_LABELS,
        "read planted file": f"raise RuntimeError(open({str(planted['secret'])!r}).read())",
        "unix socket": (f"c = torch.sys.modules['socket'].socket(1)\n"
                        f"c.connect({str(planted['socket'])!r})\n"
                        "raise RuntimeError('CONNECTED to the host socket')"),
        "fill the disk": ("for i in range(16):\n"
                          "    open(f'fill{i}.bin', 'wb').write(bytes(60 * 2**20))"),
        "ANSI escapes in the message": (
            "raise RuntimeError('\\x1b[2J\\x1b]0;pwned\\x07\\x1b]8;;http://x\\x1b\\\\"
            "click\\x1b]8;;\\x1b\\\\ \\x1b[31mred')"),
    }


def _assert_contained(label: str, hints: list, planted: dict) -> None:
    """What each contained attack must look like: a P1 hint that says why, no secret."""
    text = " ".join(f"{h.observed} {h.suggestion}" for h in hints)
    assert hints and all(h.priority is Priority.P1 for h in hints), (label, hints)
    assert "PLANTED-SECRET" not in text and "CONNECTED" not in text, (label, text)
    kinds = {h.kind for h in hints}
    if label in ("forged result line", "malformed result message"):
        assert kinds == {HintKind.TAMPERING}, (label, hints)
    elif label == "read labels":
        assert "labels seen: y_train" in text and "y_test" not in text \
            and "y_valid" not in text, text
    elif label == "ANSI escapes in the message":
        assert kinds == {HintKind.RUNTIME_ERROR} and "click red" in text, text
        assert not any(ch in text for ch in "\x1b\x07\x9b"), text
    elif label == "fill the disk":
        assert kinds == {HintKind.RESOURCE_LIMIT} and "disk" in text, (label, text)
    else:
        assert kinds <= {HintKind.RUNTIME_ERROR, HintKind.IMPORT_ERROR}, (label, hints)


def test_attacks_through_the_loop_score_honestly_or_are_rejected(home, mlp_source, monkeypatch,
                                                                 planted):
    attacks = _attacks(planted)
    sources = [(label, _hostile(mlp_source, code)) for label, code in attacks.items()]
    sources.append(("patched metric function", _hostile(mlp_source, PATCH_METRICS)))
    sources.append(("the honest model", mlp_source))
    # a target two epochs never meet: every candidate is scored, none ends the run early
    objective = ImproveObjective(mlp_source, "sklearn:iris", target="log_loss<=0.0001",
                                 recipe=GOOD)
    monkeypatch.setattr(api, "make_agent", lambda name, **_: ScriptedAgent(sources))
    result = api.run(objective, agent="scripted", max_iters=len(sources),
                     limits=Limits(wall_s=60, memory_mb=2048, scratch_mb=200))

    assert len(result.history) == len(sources)  # the loop went on after every attack
    by_label = {it.candidate.notes["summary"]: it.scorecard for it in result.history}
    for label in attacks:
        card = by_label[label]
        _assert_contained(label, [h for h in card.hints if h.kind is not HintKind.STYLE],
                          planted)
        assert card.failed_gate == "build", label
    patched, honest = by_label["patched metric function"], by_label["the honest model"]
    assert honest.all_gates_passed
    # the same model with the metric function patched inside the sandbox: the same score
    assert patched.verdict("metric").evidence["metrics"] == \
        honest.verdict("metric").evidence["metrics"]
    assert patched.score == pytest.approx(honest.score)


FIT = {"epochs": 3, "batch_size": 32}


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    """The demo's Keras model and its translation as a candidate folder (model.py,
    weights.pt, recipe.json: what `autopilot migrate` writes)."""
    from autopilot_lab.objectives.migrate import MigrateObjective

    folder = tmp_path_factory.mktemp("migrated")
    keras_path = folder / "model.keras"
    subprocess.run([sys.executable, str(ROOT / "examples" / "make_keras_model.py"),
                    str(keras_path)], check=True, capture_output=True)
    objective = MigrateObjective(str(keras_path), None, fit=FIT)
    honest = folder / "honest"
    honest.mkdir()
    (honest / "model.py").write_text(objective.translation.source)
    torch.save(objective.translation.torch_state_dict(), honest / "weights.pt")
    (honest / "recipe.json").write_text(json.dumps(objective.recipe.to_dict()))
    return keras_path, honest


def _candidate(migrated, tmp_path: Path, code: str) -> Path:
    """The honest folder with ``code`` at the start of the model class's constructor (the
    translation's last class; helper classes come before it)."""
    _, honest = migrated
    folder = tmp_path / "candidate"
    shutil.copytree(honest, folder)
    head, sep, main_class = (folder / "model.py").read_text().rpartition("\nclass ")
    (folder / "model.py").write_text(head + sep + _hostile(main_class, code))
    return folder



def _verify(migrated, folder: Path, **kw):
    return api.verify(str(migrated[0]), folder, "sklearn:breast_cancer", fit=FIT, **kw)


@pytest.mark.parametrize("label", ["forged result line", "malformed result message",
                                   "read labels", "read planted file", "unix socket",
                                   "fill the disk", "ANSI escapes in the message"])
def test_attacks_through_verify_are_rejected(migrated, tmp_path, planted, label):
    folder = _candidate(migrated, tmp_path, _attacks(planted)[label])
    card = _verify(migrated, folder, limits=Limits(wall_s=60, scratch_mb=200))
    assert not card.all_gates_passed
    assert card.failed_gate == "build"
    _assert_contained(label, [h for h in card.hints if h.kind is not HintKind.STYLE], planted)


def test_verify_fails_an_inverted_model_that_patches_every_comparison(migrated, tmp_path,
                                                                      capsys):
    """The exploit that passed `autopilot verify`: predictions inverted, the parity
    differences and the metrics patched to perfect inside the sandbox."""
    folder = _candidate(migrated, tmp_path, INVERT_AND_PATCH)
    code = cli_main(["verify", str(migrated[0]), str(folder), "--data",
                     "sklearn:breast_cancer", "--epochs", "3", "--json"])
    assert code == 1
    card = _verify(migrated, folder)
    assert card.failed_gate == "parity"
    forward = [h for h in card.hints if h.kind is HintKind.IO_MISMATCH]
    assert forward and "output 0" in forward[0].metric


def test_verify_scores_a_metric_patching_candidate_as_the_honest_one(migrated, tmp_path):
    honest = _verify(migrated, migrated[1])
    patched = _verify(migrated, _candidate(migrated, tmp_path, PATCH_METRICS))
    assert honest.all_gates_passed and patched.all_gates_passed
    assert patched.verdict("metric").evidence["metrics"] == \
        honest.verdict("metric").evidence["metrics"]
    assert patched.verdict("parity").evidence["challenge_seed"] != \
        honest.verdict("parity").evidence["challenge_seed"]  # fresh draws per candidate


def test_the_same_candidate_gets_byte_identical_verdicts(migrated):
    first, second = _verify(migrated, migrated[1]), _verify(migrated, migrated[1])
    assert [v.to_json() for v in first.verdicts] == [v.to_json() for v in second.verdicts]


def test_no_held_out_label_enters_the_sandbox(migrated, tmp_path):
    """Every input file of every job, listed from inside: only train labels."""
    listing = ("glob = __import__('glob')\n"
               "np = torch.sys.modules['numpy']\n"
               "if glob.glob('parity.npz'):  # the parity job: every file it was given\n"
               "    keys = sorted(f + ':' + k for f in glob.glob('*') if f.endswith('.npz')\n"
               "                  for k in np.load(f).files)\n"
               "    raise RuntimeError(' '.join(keys + glob.glob('*')))")
    card = _verify(migrated, _candidate(migrated, tmp_path, listing))
    assert card.failed_gate == "parity"
    text = " ".join(str(h.observed) for h in card.hints)
    assert "data.npz:y_train" in text and "parity.npz:y" in text
    for forbidden in ("y_valid", "y_test", "reference", "out_0", "grad__", "final__"):
        assert forbidden not in text, text
