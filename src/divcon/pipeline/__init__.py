"""Pipelines: single-stage (direct / step by step), two-stage static, dynamic self-ask, routed (auto)."""

from divcon.pipeline.pipelines import (MODES, STAGED_MODES, TUNED, Pipeline, PipelineConfig, bare_for_students,
                                       for_family, prompts_fingerprint, settings_of)
from divcon.pipeline.result import PipelineResult, StageUsage

__all__ = ["MODES", "STAGED_MODES", "TUNED", "Pipeline", "PipelineConfig", "PipelineResult", "StageUsage",
           "bare_for_students", "for_family", "prompts_fingerprint", "settings_of"]
