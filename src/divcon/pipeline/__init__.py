"""Pipelines: single-stage (direct / step by step), two-stage static, dynamic self-ask, routed (auto)."""

from divcon.pipeline.pipelines import (MODES, STAGED_MODES, Pipeline, PipelineConfig, prompts_fingerprint,
                                       settings_of)
from divcon.pipeline.result import PipelineResult, StageUsage

__all__ = ["MODES", "STAGED_MODES", "Pipeline", "PipelineConfig", "PipelineResult", "StageUsage", "prompts_fingerprint",
           "settings_of"]
