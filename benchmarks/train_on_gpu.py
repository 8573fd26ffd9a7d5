"""Train bench_distill's students on a GPU machine that has none of divcon's caches or embedded-model packages.

    python benchmarks/train_on_gpu.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf --variants se-t,se-a [bench_distill args]

Why: on a 2-core CPU one GSM8K solver student (300 steps of 4 examples, 448 tokens) took 40 s a step, over three
hours; on one H100 it took under three minutes (0.5 s a step; ``train_seconds`` in each ``divcon_train.json``).
The students are the same: this takes bench_distill's own arguments and trains each variant with bench_distill's
:func:`student_config` (same base, data, steps, length, seed) into the same folder, so bench_distill and
benchmarks/evidence.py find it trained and go on to evaluate it. Only the hardware differs, and
``divcon_train.json`` records it (``device``; transformers trains in bf16 mixed precision on a GPU).

The base arrives as the student's GGUF file (a GPU machine has no embedded-model packages), checked against the
pinned sha256 and converted to the float32 HF folder a CPU run makes (:func:`hf_dir_for_alias`). The training sets
(``<out>/data/<variant>.jsonl``) must already exist: they are built from the teacher's traces by bench_distill.
The GPU machine needs the repository (``src`` and ``benchmarks`` on PYTHONPATH), the training sets, the GGUF and
the train extra (torch, transformers, peft, trl, datasets, gguf); copy ``<out>/students/<variant>`` back and commit it.
"""

from __future__ import annotations

from pathlib import Path

from bench_distill import out_dir, parser, student_config

from divcon.backends.transformers_backend import hf_dir_for_alias
from divcon.distill.train import train


def main() -> None:
    ap = parser()
    ap.description = __doc__
    ap.add_argument("--gguf", type=Path, required=True, help="the student base's GGUF file (sha256-checked)")
    args = ap.parse_args()
    out = out_dir(args)
    variants = args.variants.split(",")
    missing = [v for v in variants if not (out / "data" / f"{v}.jsonl").exists()]
    if missing:
        ap.error(f"no training set for {missing} under {out / 'data'}: run bench_distill first (it builds them)")
    hf_dir_for_alias(args.student, gguf=args.gguf)
    for v in variants:
        if (out / "students" / v / "divcon_train.json").exists():
            print(f"{v}: already trained", flush=True)
            continue
        summary = train(student_config(args.task, v, out, args.student, args.epochs, args.max_steps))
        print(f"{v}: {summary['steps']} steps on {summary['device']} in {summary['train_seconds']:.0f} s, "
              f"final loss {summary['final_loss']:.3f}", flush=True)


if __name__ == "__main__":
    main()
