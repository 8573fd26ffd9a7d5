"""Pipelines: single-stage (direct / step by step), two-stage static, dynamic self-ask."""

from divcon.pipeline.pipelines import MODES, Pipeline, PipelineConfig
from divcon.pipeline.result import PipelineResult, StageUsage

__all__ = ["MODES", "Pipeline", "PipelineConfig", "PipelineResult", "StageUsage"]
