"""Pipelines: single-stage (direct / step by step), two-stage static, dynamic self-ask, routed (auto)."""

from divcon.pipeline.pipelines import (MODES, STAGED_MODES, TUNED, Pipeline, PipelineConfig, for_family,
                                       prompts_fingerprint, settings_of)
from divcon.pipeline.result import PipelineResult, StageUsage

__all__ = ["MODES", "STAGED_MODES", "TUNED", "Pipeline", "PipelineConfig", "PipelineResult", "StageUsage", "for_family",
           "prompts_fingerprint", "settings_of"]
