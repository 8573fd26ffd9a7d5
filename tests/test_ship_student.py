"""``divcon distill ship``: a trained student becomes an embedded alias (its adapter in the package data, pinned by
digest, with a training card); ``llamacpp:<alias>`` is then its base with that LoRA. On the tiny fake adapter of
test_lora_adapter, so nothing is loaded or trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from divcon.backends import ModelSpec, load_backend
from divcon.backends.llamacpp import LlamaCppBackend
from divcon.backends import registry
from divcon.backends.registry import ChecksumMismatch, default_decomposer, students
from divcon.cli import app
from divcon.distill.export import export_lora_gguf
from divcon.distill.ship import ship
from tests.conftest import needs_smollm2
from tests.test_lora_adapter import make_adapter


@pytest.fixture
def root(tmp_path, monkeypatch):
    """Where shipped students live, for this test only (the real one is the package's resources/students)."""
    monkeypatch.setattr(registry, "STUDENTS_DIR", tmp_path / "students")
    monkeypatch.setenv("DIVCON_CACHE", str(tmp_path / "cache"))
    return tmp_path / "students"


@pytest.fixture
def trained(tmp_path, monkeypatch) -> Path:
    """A student folder as `divcon distill train` leaves it, trained on a set whose counts file sits beside it."""
    monkeypatch.chdir(tmp_path)
    adapter = make_adapter(tmp_path / "out" / "sd-route", tmp_path / "base")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sd-route.counts.json").write_text(json.dumps({"traces": 8, "kept": 5}))
    (adapter / "divcon_train.json").write_text(json.dumps({
        "config": {"data": str(tmp_path / "data" / "sd-route.jsonl"), "epochs": 2.0, "lr": 2e-4, "lora_r": 16,
                   "max_len": 256, "batch_size": 4},
        "base_alias": "smollm2-135m", "examples": 5, "examples_trained": 5, "steps": 3, "final_loss": 0.5,
        "peak_rss_mb": 900}))
    (adapter / "loss.png").write_bytes(b"not shipped")
    return adapter


def test_ship_copies_only_the_adapter_and_pins_it_with_a_card(root, trained, tmp_path):
    entry = ship(trained, "sd-route-135m", "SD-route decomposer (GSM8K)", "reports/table1: SD-route/T row", root)
    assert sorted(p.name for p in (root / "sd-route-135m").iterdir()) == ["adapter_config.json",
                                                                          "adapter_model.safetensors"]
    card = entry["card"]
    assert card["config"]["data"] == "data/sd-route.jsonl"  # relative: a committed card holds no machine path
    assert card["data_counts"] == {"traces": 8, "kept": 5} and card["steps"] == 3 and card["final_loss"] == 0.5
    assert card["evidence"] == "reports/table1: SD-route/T row" and "peak_rss_mb" not in card
    manifest = (root / "students.json").read_text()
    assert str(tmp_path) not in manifest
    assert students(root)["sd-route-135m"].base == "smollm2-135m"


def test_a_shipped_alias_is_its_base_with_the_lora_and_shares_its_identity(root, trained):
    ship(trained, "sd-route-135m", "t", "e", root)
    shipped = load_backend("llamacpp:sd-route-135m,engine=inproc")
    from_folder = load_backend(f"llamacpp:smollm2-135m,lora={trained},engine=inproc")
    assert shipped.identity.key == from_folder.identity.key  # same weights: the call cache is shared
    assert shipped.spec == "llamacpp:sd-route-135m,engine=inproc"  # what a run records: no machine path
    assert load_backend("sd-route-135m").identity.key == shipped.identity.key  # the bare alias too


@needs_smollm2
def test_a_shipped_alias_derives_its_gguf_from_the_adapter_alone(root, trained, tmp_path):
    """The shipped folder holds no divcon_train.json: the base comes from the manifest, and the derived GGUF is the
    very file the trained folder exports."""
    ship(trained, "sd-route-135m", "t", "e", root)
    backend = LlamaCppBackend(ModelSpec.parse("llamacpp:sd-route-135m,engine=inproc"))
    by_hand, _ = export_lora_gguf(trained, tmp_path / "by_hand.gguf")
    assert Path(backend.lora).read_bytes() == by_hand.read_bytes()


def test_a_tampered_shipped_adapter_is_refused(root, trained):
    ship(trained, "sd-route-135m", "t", "e", root)
    weights = root / "sd-route-135m" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")
    with pytest.raises(ChecksumMismatch, match="refusing to load"):
        load_backend("llamacpp:sd-route-135m")


@pytest.mark.parametrize("alias, message", [("smollm2-135m", "base model's alias"), ("a,b", "alias")])
def test_ship_refuses_a_bad_alias(root, trained, alias, message):
    with pytest.raises(ValueError, match=message):
        ship(trained, alias, "t", "e", root)
    assert not (root / "students.json").exists()


def test_ship_refuses_a_student_whose_base_is_not_embedded(root, trained):
    meta = json.loads((trained / "divcon_train.json").read_text())
    (trained / "divcon_train.json").write_text(json.dumps(meta | {"base_alias": None}))
    with pytest.raises(ValueError, match="not an embedded model"):
        ship(trained, "x-135m", "t", "e", root)


def gate_runs(tmp_path: Path, adapter: Path, student: list[int], teacher: list[int],
              decomposer_key: str | None = None, solver: str = "solver-key") -> tuple[Path, Path]:
    """Two run dirs on the same GSM8K questions: the student decomposing (by default this adapter's identity) and
    the teacher decomposing, both with the same solver, scored em per question."""
    key = decomposer_key or load_backend(f"llamacpp:smollm2-135m,lora={adapter},engine=inproc").identity.key
    runs = []
    for name, dec, scores in (("S", key, student), ("T", "teacher-key", teacher)):
        d = tmp_path / "runs" / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps({"task": "gsm8k", "split": "test", "mode": "two-stage",
                                                   "decomposer": f"llamacpp:{name}", "solver": "llamacpp:x",
                                                   "models": {"decomposer": dec, "solver": solver}}))
        (d / "records.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "metrics": {"em": float(v)}}) + "\n"
                                                 for i, v in enumerate(scores)))
        runs.append(d)
    return runs[0], runs[1]


def test_models_lists_a_shipped_student_and_the_cli_ships_one(root, trained, tmp_path):
    runner = CliRunner()
    s_run, t_run = gate_runs(tmp_path, trained, [1] * 60, [1] * 50 + [0] * 10)
    result = runner.invoke(app, ["distill", "ship", str(trained), "--alias", "sd-route-135m", "--title",
                                 "SD-route decomposer", "--evidence", "r", "--default-for", "math",
                                 "--student-run", str(s_run)], env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "go together" in result.output
    result = runner.invoke(app, ["distill", "ship", str(trained), "--alias", "sd-route-135m", "--title",
                                 "SD-route decomposer", "--evidence", "r", "--default-for", "math",
                                 "--student-run", str(s_run), "--teacher-run", str(t_run)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "use it as --decomposer sd-route-135m" in result.output
    listed = runner.invoke(app, ["models"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and "sd-route-135m" in listed.output
    assert "LoRA on smollm2-135m; default decomposer for math" in listed.output


def test_a_student_shipped_as_a_familys_default_is_divcon_solves_decomposer_there_only(root, trained, tmp_path):
    assert default_decomposer("math") == "llamacpp:qwen2.5-1.5b"  # nothing shipped: the teacher
    gate = gate_runs(tmp_path, trained, [1] * 60, [1] * 50 + [0] * 10)
    entry = ship(trained, "sd-r-135m", "t", "e", root, default_for=("math",), gate_runs=gate)
    assert default_decomposer("math") == "llamacpp:sd-r-135m"
    assert default_decomposer("reading") == "llamacpp:qwen2.5-1.5b"
    card_gate = entry["card"]["default_gate"]
    assert card_gate["n"] == 60 and card_gate["verdict"] == "holds" and card_gate["student_run"] == "runs/S"
    assert card_gate["paired_diff"] == pytest.approx(10 / 60)
    ship(trained, "sd-route-135m", "t", "e", root, default_for=("math", "openqa"), gate_runs=gate)  # takes math over
    assert students(root)["sd-r-135m"].default_for == () and default_decomposer("math") == "llamacpp:sd-route-135m"
    with pytest.raises(ValueError, match="unknown task families"):
        ship(trained, "x-135m", "t", "e", root, default_for=("poetry",))


def test_a_default_needs_evidence_that_the_student_is_at_least_as_good(root, trained, tmp_path):
    """No runs, runs of another adapter or solver, or a student row not shown at least as good (paired, margin
    0.03): each is refused, naming why, and the student does not become the default."""
    with pytest.raises(ValueError, match="needs evidence"):
        ship(trained, "sd-r-135m", "t", "e", root, default_for=("math",))
    worse = gate_runs(tmp_path / "worse", trained, [1] * 40 + [0] * 20, [1] * 60)
    with pytest.raises(ValueError, match=r"not at least as good .*em 0\.667 vs 1\.000.*does not hold"):
        ship(trained, "sd-r-135m", "t", "e", root, default_for=("math",), gate_runs=worse)
    tied_small = gate_runs(tmp_path / "small", trained, [1, 0] * 5, [0, 1] * 5)  # tied on average, n=10: too few
    with pytest.raises(ValueError, match="undecided"):
        ship(trained, "sd-r-135m", "t", "e", root, default_for=("math",), gate_runs=tied_small)
    other = gate_runs(tmp_path / "other", trained, [1] * 60, [1] * 60, decomposer_key="another-adapter")
    with pytest.raises(ValueError, match="was not decomposed by"):
        ship(trained, "sd-r-135m", "t", "e", root, default_for=("math",), gate_runs=other)
    s_run, _ = gate_runs(tmp_path / "a", trained, [1] * 60, [1] * 60)
    _, t_other_solver = gate_runs(tmp_path / "b", trained, [1] * 60, [1] * 60, solver="another-solver")
    with pytest.raises(ValueError, match="differ in task, split or solver"):
        ship(trained, "sd-r-135m", "t", "e", root, default_for=("math",), gate_runs=(s_run, t_other_solver))
    assert default_decomposer("math") == "llamacpp:qwen2.5-1.5b" and not (root / "sd-r-135m").exists()
