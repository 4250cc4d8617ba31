"""Bulk scoring with Ray Data: a dump (JSONL / CSV / Parquet, local or s3://) -> Parquet scores.

    mmsent score INPUT OUTPUT [--config mmsent/presets/score/<name>.yaml]

read (stages.read_unit, plan, rows) -> fetch (stages.FetchStage) -> preprocess (stages.preprocess,
CPU tasks) -> model (stages.ModelStage, actor pool) -> write_parquet, in blocks of typed Arrow
columns read by name; resume.py makes a re-run finish a killed job, summary.py accounts for
every row. See docs/bulk-scoring.md. Importing this package starts nothing.
"""
