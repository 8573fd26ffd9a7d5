"""divcon: two-stage (decompose, then solve) LLM reasoning, with tools to distill the decomposer into a small model.

The package is laid out by job: ``backends`` (model calls, logged and cached), ``tasks`` (data, answer extraction,
metrics), ``pipeline`` (single-stage, two-stage static, dynamic self-ask), ``evaluate`` (resumable runs),
``distill`` (teacher traces, SD/SE training sets, LoRA fine-tuning), ``experiments`` (grids and reports), ``cli``.
"""

__version__ = "0.1.0"
