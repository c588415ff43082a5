"""Benchmark scorers reproducing the LLaVA-1.5 evaluation protocol (see SPEC §6), one module per benchmark.

Shared pieces: `answers` (reading answers files, joining them to questions, coverage bookkeeping) and
`vqa_normalize` (the EvalAI answer normalisation and VQA soft accuracy).
"""
