"""LoRA fine-tuning of a student on a built training set (see :mod:`divcon.distill.build`).

Loss is on the assistant turn only: each chat example is split into a prompt ([system, user]) and a completion
([assistant]) and trl's ``SFTTrainer`` masks the prompt tokens out of the labels (``completion_only_loss``). That path
works with any chat template; trl's ``assistant_only_loss`` instead needs ``{% generation %}`` markers that the
embedded models' templates lack. :func:`check_labels` verifies the masking on the prepared data before training.

The output folder is a PEFT adapter whose ``adapter_config.json`` names the base model (its alias, or the absolute
path of a model folder), so ``load_backend("hf:<out>")`` serves the student directly with the base's tokenizer, and
``llamacpp:<alias>,lora=<out>`` derives its llama.cpp GGUF on first use
(:func:`divcon.distill.export.derived_lora_gguf`). Nothing derivable is saved into it (no tokenizer copy, no GGUF):
the folder is what gets committed. Alongside: ``divcon_train.json`` (config, sizes, time, peak memory, losses),
``train_log.jsonl`` (one line per logging step) and ``loss.png``.

Training on a CPU takes tens of minutes, longer than a session may have left, so it checkpoints every ``save_steps``
into ``<out>/checkpoints`` (adapter, optimizer, scheduler, RNG and data position) and a re-run with the same config
resumes from the last one (only the last is kept); the checkpoints are removed once the adapter is saved. A time box
(``should_stop``, e.g. a benchmark's ``--stop-after``) ends training cleanly after the current step with a checkpoint,
so a session that has an hour left trains an hour, not zero minutes or an hour and a lost half. The checkpoint is not
git-ignored: where each session starts from a clean clone, committing it is what carries the training over.
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from divcon.runs import ConfigMismatch, RunLock, open_run, write_json

CHECKPOINT_SECONDS = "divcon_seconds.json"  # in each checkpoint: the training seconds of the steps it holds


@dataclass
class TrainConfig:
    base: str  # an embedded alias (converted once to an HF folder) or an HF model folder
    data: str  # a JSONL training set of {"messages": [...]} rows
    out: str  # the adapter folder to write
    epochs: float = 1.0
    lr: float = 2e-4
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    # Attention projections only: on 2 CPU cores they train about 25% faster per step than "all-linear" (measured
    # 5.1 vs 6.8 s/step, SmolLM2-135M, batch 4, 256 tokens), which is what lets ~2k SD examples fit in ~45 minutes.
    target_modules: str = "q_proj,k_proj,v_proj,o_proj"  # or "all-linear"
    max_len: int = 512  # tokens; longer examples are truncated at the end
    batch_size: int = 4
    grad_accum: int = 1
    max_steps: int = -1  # > 0 overrides epochs
    max_examples: int | None = None  # the first N rows of the data
    seed: int = 0
    logging_steps: int = 5
    save_steps: int = 25  # checkpoint interval; a re-run resumes from the last checkpoint


def load_examples(path: Path, max_examples: int | None = None) -> list[dict]:
    """Rows as trl prompt-completion pairs: every message but the last is the prompt, the last (assistant) message
    is the completion that carries the loss."""
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        msgs = json.loads(line)["messages"]
        if len(msgs) < 2 or msgs[-1]["role"] != "assistant":
            raise ValueError(f"{path}:{i + 1}: an example must end with an assistant message")
        rows.append({"prompt": msgs[:-1], "completion": msgs[-1:]})
        if max_examples is not None and len(rows) >= max_examples:
            break
    if not rows:
        raise ValueError(f"no training examples in {path}")
    return rows


def check_labels(dataset, eos_token_id: int) -> dict:
    """Proof on the prepared data that the loss is completion-only: every example starts with masked (-100) prompt
    labels, has trained labels, and trains the end-of-turn token (so the student learns to stop)."""
    masked = trained = 0
    ends_with_eos = 0
    for labels in dataset["labels"]:
        live = [t for t in labels if t != -100]
        if labels[0] != -100 or not live:
            raise RuntimeError("prompt tokens are not masked out of the labels; refusing to train on the prompt")
        masked += len(labels) - len(live)
        trained += len(live)
        ends_with_eos += eos_token_id in live
    return {"masked_tokens": masked, "trained_tokens": trained, "examples_training_eos": ends_with_eos}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def plot_loss(log: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in log], [r["loss"] for r in log], marker="o", ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(path.parent.name)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def train(cfg: TrainConfig, should_stop: Callable[[], bool] | None = None) -> dict | None:
    """Fine-tune and save; returns what is written to ``divcon_train.json``. When ``should_stop()`` turns true
    before the last step, training stops after the step in progress, saves a checkpoint there and returns None:
    nothing is saved as the adapter, and re-running the same config resumes from that checkpoint."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from divcon.backends.registry import EMBEDDED
    from divcon.backends.transformers_backend import resolve_base

    t0 = time.perf_counter()
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    base_dir = resolve_base(cfg.base).resolve()
    rows = load_examples(Path(cfg.data), cfg.max_examples)
    tok = AutoTokenizer.from_pretrained(str(base_dir))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    gpu = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    targets = cfg.target_modules if cfg.target_modules == "all-linear" else cfg.target_modules.split(",")
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")
    ckpt_dir = out / "checkpoints"
    resume, lock = _resumable_checkpoint(ckpt_dir, cfg)
    # each checkpoint pickles its arguments (training_args.bin) and is meant to be committed: name the folder
    # relative to the working dir where it lies under it, so no machine path is stored
    cwd = Path.cwd()
    args = SFTConfig(
        output_dir=str(ckpt_dir.relative_to(cwd) if ckpt_dir.is_relative_to(cwd) else ckpt_dir),
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=1,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        learning_rate=cfg.lr, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, max_length=cfg.max_len, completion_only_loss=True,
        logging_steps=cfg.logging_steps, report_to="none", seed=cfg.seed,
        use_cpu=not gpu, bf16=gpu and torch.cuda.is_bf16_supported(), dataloader_num_workers=0,
    )
    log_path = out / "train_log.jsonl"
    resumed_step = int(Path(resume).name.split("-")[-1]) if resume else 0
    seconds_before = _checkpoint_seconds(Path(resume)) if resume else 0.0  # of earlier processes; None: unknown
    # on resume keep the logged losses up to the checkpoint; the steps after it are trained again
    log = [r for r in _read_log(log_path) if r["step"] <= resumed_step] if resume else []
    log_path.write_text("".join(json.dumps(r) + "\n" for r in log), encoding="utf-8")

    class _LogLoss(TrainerCallback):
        """Appends each logged loss as it happens, so a long run can be watched (tail -f train_log.jsonl); also logs
        the last step, which ``logging_steps`` may skip, so the final loss is always known; and stops at a
        checkpoint once ``should_stop()`` says so."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= state.max_steps:
                control.should_log = True
            elif should_stop is not None and should_stop():
                control.should_save = control.should_training_stop = True

        def on_save(self, args, state, control, **kwargs):
            """Each checkpoint carries the training seconds of the steps in it, so a resumed run adds them up."""
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                spent = time.perf_counter() - t_train
                write_json(folder / CHECKPOINT_SECONDS, {"step": state.global_step,
                                                         "seconds": None if seconds_before is None
                                                         else seconds_before + spent})

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                row = {"step": state.global_step, "epoch": state.epoch, "loss": logs["loss"],
                       "lr": logs.get("learning_rate"), "seconds": time.perf_counter() - t0}  # of this process
                log.append(row)
                with open(log_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")

    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=lora, callbacks=[_LogLoss()])
    label_check = check_labels(trainer.train_dataset, tok.eos_token_id)
    t_train = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.perf_counter() - t_train
    if result.global_step < trainer.state.max_steps:  # stopped by should_stop, at a checkpoint
        lock.release()
        return None
    trainer.model.save_pretrained(str(out))  # the adapter only: the tokenizer is the base's, unchanged but for pad
    adapter_cfg_path = out / "adapter_config.json"
    adapter_cfg = json.loads(adapter_cfg_path.read_text(encoding="utf-8"))
    # An embedded base is named by its alias, not by this machine's cache folder: the adapter then loads on any
    # machine (the backends resolve the alias), and no absolute path is written into a folder that gets committed.
    base_name = cfg.base if cfg.base in EMBEDDED else str(base_dir)
    adapter_cfg["base_model_name_or_path"] = base_name
    write_json(adapter_cfg_path, adapter_cfg)
    card = out / "README.md"  # peft's model card names the base too
    if card.exists():
        card.write_text(card.read_text(encoding="utf-8").replace(str(base_dir), base_name), encoding="utf-8")
    if log:
        plot_loss(log, out / "loss.png")
    summary = {
        "config": asdict(cfg),
        "base_alias": cfg.base if cfg.base in EMBEDDED else None,
        "base_dir": None if cfg.base in EMBEDDED else str(base_dir),
        "device": torch.cuda.get_device_name(0) if gpu else "cpu",
        "examples": len(rows),
        "examples_trained": len(trainer.train_dataset),  # trl drops examples whose target was truncated away
        "steps": result.global_step,
        "resumed_from_step": resumed_step,
        **label_check,
        # training time of the steps in the adapter, over every process that trained them (a step trained again after
        # a crash counts once; None where a checkpoint from before this was recorded hides some); loading and data
        # preparation are in total_seconds, of this process only
        "train_seconds": None if seconds_before is None else seconds_before + train_seconds,
        "seconds_per_step": (train_seconds / max(result.global_step - resumed_step, 1) if seconds_before is None
                             else (seconds_before + train_seconds) / max(result.global_step, 1)),
        "total_seconds": time.perf_counter() - t0,
        "peak_rss_mb": _peak_rss_mb(),
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if gpu else None,
        "final_loss": log[-1]["loss"] if log else None,
        "mean_loss": mean_logged_loss(log) if log else result.training_loss,  # the whole run, not this process's
    }
    write_json(out / "divcon_train.json", summary)
    lock.release()
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    return summary


def mean_logged_loss(log: list[dict]) -> float:
    """The run's mean training loss from its logged rows, each the mean over the steps since the row before, so
    weighted by that interval. transformers' own ``training_loss`` of a resumed run averages only the steps of the
    last process."""
    steps = [0] + [r["step"] for r in log]
    weights = [b - a for a, b in zip(steps, steps[1:])]
    return sum(r["loss"] * w for r, w in zip(log, weights)) / max(sum(weights), 1)


def _checkpoint_seconds(checkpoint: Path) -> float | None:
    """The training seconds a checkpoint's steps took; None when unknown (saved before this was recorded)."""
    path = checkpoint / CHECKPOINT_SECONDS
    seconds = json.loads(path.read_text(encoding="utf-8"))["seconds"] if path.is_file() else None
    return None if seconds is None else float(seconds)


def _read_log(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _resumable_checkpoint(ckpt_dir: Path, cfg: TrainConfig) -> tuple[str | None, RunLock]:
    """The last checkpoint of an interrupted run with this very config (else None), and the lock the caller holds
    while it trains. The checkpoint dir is opened like a run dir, so checkpoints of another config are refused
    rather than silently mixed into this run, and a second trainer on the same --out is refused."""
    from transformers.trainer_utils import get_last_checkpoint

    try:
        lock = open_run(ckpt_dir, asdict(cfg))
    except ConfigMismatch as e:
        raise ValueError(f"checkpoints of a different training config: {e}") from None
    return get_last_checkpoint(str(ckpt_dir)), lock
