"""Real LoRA training of SmolLM2-135M on a tiny decomposer set: the loss falls, the prompt is masked out of the loss,
the adapter is saved with its report files (and no derivable copies), and it serves through the ``hf:`` backend and,
from the same folder, through llama.cpp.

Slow (about 1-3 minutes on 2 CPU cores; the first run also converts the GGUF to an HF folder under DIVCON_CACHE,
which is reused when that variable is already set).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from divcon.pipeline import prompts as P

pytestmark = [pytest.mark.train, pytest.mark.slow]
pytest.importorskip("peft")
pytest.importorskip("trl")


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    """The converted base is cached in DIVCON_CACHE: reuse the user's when set, else a session temp dir (conftest
    already gives each test its own call log)."""
    with pytest.MonkeyPatch.context() as mp:
        if not os.environ.get("DIVCON_CACHE"):
            mp.setenv("DIVCON_CACHE", str(tmp_path_factory.mktemp("divcon_cache")))
        yield


def tiny_set(path: Path, n: int = 16) -> None:
    """Word problems that all decompose the same way: a pattern a LoRA picks up in a few steps."""
    rnd = random.Random(0)
    names = ["Tom", "Ana", "Li", "Sam"]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            who, a, b = names[i % 4], rnd.randint(2, 90), rnd.randint(2, 90)
            q = f"{who} has {a} apples and buys {b} more. How many apples does {who} have now?"
            target = P.format_subquestions([f"How many apples did {who} have at first?",
                                            f"How many apples did {who} buy?",
                                            f"How many apples does {who} have in total?"])
            msgs = P.decompose_messages(q, None, "math") + [{"role": "assistant", "content": target}]
            f.write(json.dumps({"messages": msgs}) + "\n")


def test_lora_smoke(cache, tmp_path):
    from divcon.backends import ChatRequest, load_backend
    from divcon.backends.registry import ModelNotAvailable
    from divcon.distill.train import TrainConfig, train

    data = tmp_path / "sd.jsonl"
    tiny_set(data)
    out = tmp_path / "student"
    cfg = TrainConfig(base="smollm2-135m", data=str(data), out=str(out), max_steps=6, lr=1e-3, max_len=256,
                      batch_size=4, logging_steps=1)
    try:
        s = train(cfg)
    except ModelNotAvailable as e:
        pytest.skip(str(e))
    losses = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(losses) == 6
    assert sum(losses[-2:]) / 2 < losses[0] * 0.5, losses
    assert s["masked_tokens"] > s["trained_tokens"] > 0  # the prompt is longer than the target and is masked
    assert s["examples_training_eos"] == 16  # every target teaches the end-of-turn token
    for name in ("adapter_config.json", "adapter_model.safetensors", "divcon_train.json", "loss.png"):
        assert (out / name).exists(), name
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "lora.gguf"):
        assert not (out / name).exists(), name  # derivable from the base or the adapter: not kept in the folder
    base = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    # an embedded base is named by its alias, never by this machine's cache folder (adapters get committed)
    assert base == "smollm2-135m" and "/" not in (out / "README.md").read_text().split("base_model:")[1].split()[0]
    assert s["examples"] == 16 and s["steps"] == 6 and s["peak_rss_mb"] > 0
    print(f"\nsmoke training: {s['train_seconds']:.1f}s train, {s['total_seconds']:.1f}s total, "
          f"{s['seconds_per_step']:.2f} s/step, peak RSS {s['peak_rss_mb']:.0f} MB, losses {losses}")

    msgs = P.decompose_messages("Ana has 5 pens and buys 7 more. How many pens does Ana have now?", None, "math")
    gen = load_backend(f"hf:{out}").generate([ChatRequest.of(msgs, max_tokens=48)])[0]  # with the base's tokenizer
    assert gen.text.strip()
    assert P.parse_subquestions(gen.text), gen.text  # it learned the numbered subquestion form

    # the same adapter served by llama.cpp from its folder (its GGUF derived into the cache), on the GGUF the HF base
    # was converted from, says what the HF student says, and the untrained base does not: the export carries the
    # learned change, not just a loadable file
    pytest.importorskip("llama_cpp")
    from typer.testing import CliRunner

    from divcon.cli import app
    from divcon.distill.export import derived_lora_gguf

    spec = f"llamacpp:smollm2-135m,lora={out}"
    req = [ChatRequest.of(msgs, max_tokens=48)]
    first = [load_backend(s).generate(req)[0].text.strip().splitlines()[0] for s in (spec, "llamacpp:smollm2-135m")]
    assert first[0] == gen.text.strip().splitlines()[0], (first, gen.text)
    assert first[1] != first[0]
    # `divcon distill export` still writes that very GGUF as a standalone file, and prints the spec serving it
    res = CliRunner().invoke(app, ["distill", "export", str(out), "--out", str(tmp_path / "student.gguf")])
    assert res.exit_code == 0, res.output
    assert f"llamacpp:smollm2-135m,lora={tmp_path / 'student.gguf'}" in res.output.replace("\n", "")
    assert (tmp_path / "student.gguf").read_bytes() == derived_lora_gguf(out).read_bytes()


def test_training_resumes_from_checkpoint(cache, tmp_path, monkeypatch):
    """A run that dies after its last checkpoint (here: in the loss plot, after training) is resumed by re-running
    the same config: no step is trained again, the logged losses are kept, and the checkpoints are then removed."""
    from divcon.backends.registry import ModelNotAvailable
    from divcon.distill import train as T

    data = tmp_path / "sd.jsonl"
    tiny_set(data, n=8)
    out = tmp_path / "student"
    cfg = T.TrainConfig(base="smollm2-135m", data=str(data), out=str(out), max_steps=4, save_steps=2, lr=1e-3,
                        max_len=256, batch_size=4, logging_steps=1)

    def crash(*_a, **_k):
        raise RuntimeError("killed")

    monkeypatch.setattr(T, "plot_loss", crash)
    try:
        with pytest.raises(RuntimeError, match="killed"):
            T.train(cfg)
    except ModelNotAvailable as e:
        pytest.skip(str(e))
    assert (out / "checkpoints" / "checkpoint-4").is_dir() and not (out / "divcon_train.json").exists()
    monkeypatch.undo()

    with pytest.raises(ValueError, match="different training config"):
        T.train(T.TrainConfig(**{**cfg.__dict__, "lr": 5e-4}))
    s = T.train(cfg)
    assert s["resumed_from_step"] == 4 and s["steps"] == 4
    assert [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert not (out / "checkpoints").exists() and (out / "adapter_model.safetensors").exists()


def test_training_stops_at_a_time_limit_and_resumes(cache, tmp_path, monkeypatch):
    """A time box ends training after the step in progress with a checkpoint there and no adapter; the same config
    run again resumes from that step and finishes. The checkpoint, which is committed, holds no machine path."""
    from divcon.backends.registry import ModelNotAvailable
    from divcon.distill import train as T

    monkeypatch.chdir(tmp_path)  # as in a checkout: the student's folder lies under the working dir
    data = tmp_path / "sd.jsonl"
    tiny_set(data, n=8)
    out = tmp_path / "student"
    cfg = T.TrainConfig(base="smollm2-135m", data=str(data), out=str(out), max_steps=3, save_steps=100, lr=1e-3,
                        max_len=256, batch_size=4, logging_steps=1)
    try:
        assert T.train(cfg, should_stop=lambda: True) is None
    except ModelNotAvailable as e:
        pytest.skip(str(e))
    assert [p.name for p in (out / "checkpoints").glob("checkpoint-*")] == ["checkpoint-1"]
    pickled_args = (out / "checkpoints" / "checkpoint-1" / "training_args.bin").read_bytes()
    assert str(tmp_path).encode() not in pickled_args and str(tmp_path.resolve()).encode() not in pickled_args
    assert not (out / "adapter_model.safetensors").exists() and not (out / "divcon_train.json").exists()
    first = json.loads((out / "checkpoints" / "checkpoint-1" / T.CHECKPOINT_SECONDS).read_text())
    assert first["step"] == 1 and first["seconds"] > 0
    s = T.train(cfg, should_stop=lambda: False)
    assert s["resumed_from_step"] == 1 and s["steps"] == 3
    assert (out / "adapter_model.safetensors").exists() and not (out / "checkpoints").exists()
    # the card's figures are the whole run's: both processes' training time, every logged step's loss
    assert s["train_seconds"] > first["seconds"] and s["seconds_per_step"] == pytest.approx(s["train_seconds"] / 3)
    losses = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(losses) == 3 and s["mean_loss"] == pytest.approx(sum(losses) / 3)


def test_mean_logged_loss_weights_each_row_by_its_steps():
    from divcon.distill.train import mean_logged_loss

    # rows at steps 5, 10 and 12: the last covers 2 steps, so it weighs 2/12, not 1/3
    log = [{"step": 5, "loss": 1.0}, {"step": 10, "loss": 0.5}, {"step": 12, "loss": 0.2}]
    assert mean_logged_loss(log) == pytest.approx((5 * 1.0 + 5 * 0.5 + 2 * 0.2) / 12)
