"""Measuring the model: FLOPs and parameters (chapter 8), throughput and latency (chapter 9),
where its attention goes (chapters 4 to 6).

* :mod:`~fastervit.analysis.formulas`: the closed formulas, the book's one cost model;
* :mod:`~fastervit.analysis.counting`: fvcore's count of a traced forward and the report;
* :mod:`~fastervit.analysis.benchmark`: throughput and latency;
* :mod:`~fastervit.analysis.attention_maps`: the attention weights of a forward pass.
"""

from fastervit.analysis.attention_maps import AttentionRecord, record_attention
from fastervit.analysis.counting import (
    FlopReport,
    analytic_report,
    build_for_counting,
    count_flops,
    count_params,
    flop_analysis,
    sdpa_flop_jit,
)
from fastervit.analysis.formulas import (
    ATTENTION,
    BLOCK,
    COMPONENTS,
    UNCACHED,
    Counting,
    Term,
    analytic_terms,
    attention_entries,
    block_macs,
    block_terms,
)

__all__ = [
    "ATTENTION",
    "BLOCK",
    "COMPONENTS",
    "UNCACHED",
    "AttentionRecord",
    "Counting",
    "FlopReport",
    "Term",
    "analytic_report",
    "analytic_terms",
    "attention_entries",
    "block_macs",
    "block_terms",
    "build_for_counting",
    "count_flops",
    "count_params",
    "flop_analysis",
    "record_attention",
    "sdpa_flop_jit",
]
