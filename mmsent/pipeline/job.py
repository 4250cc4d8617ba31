"""One scoring job: plan the input, resume, run the Ray Data graph, account for every row.

    summary = run("dump/*.jsonl", "out/scores", load_config(ScoreCfg, "local", kind="score"))

The graph (streaming: blocks flow through all stages at once, memory stays bounded):

    from_items(one unit per input file)
      -> read_unit      tasks, read_num_cpus          rows not yet written, blocks of B rows
      -> FetchStage     actors, no CPU, many blocks at once: image and audio bytes (those the
                        model reads)
      -> preprocess     tasks, preprocess_num_cpus    Preprocessor (decode, tokenize)
      -> ModelStage     ActorPoolStrategy(min, max), model_num_cpus / model_num_gpus
      -> write_parquet  OUTPUT/*.parquet, at most max_rows_per_file rows each

Blocks are Arrow tables of typed columns (docs/bulk-scoring.md, "Stage columns"): any stage can
be looked at with Ray's own tools, e.g. read_dataset(plan, units, cfg).show(3) or .schema().
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from .. import __version__
from ..config import ModelCfg, ScoreCfg, from_dict, to_dict
from ..io.dumps import filesystem, to_uri
from ..models.checkpoint import read_meta
from . import lease, ray_compat, resume
from .output import output_fields
from .plan import Plan, make_plan
from .rows import FETCHED
from .stages import FetchStage, ModelStage, preprocess, read_unit
from .summary import account


def model_config(model_dir: str | None) -> ModelCfg:
    return from_dict(ModelCfg, read_meta(model_dir)["model"])


def read_dataset(plan: Plan, units: list[dict], cfg: ScoreCfg):
    """The read stage: blocks of typed columns (rows.READ_FIELDS + pass-through, by name)."""
    import ray.data

    ray_compat.limit_object_store(cfg.object_store_mb)  # this driver's DataContext
    items = [{"unit": json.dumps(u)} for u in units]
    ds = ray.data.from_items(items, override_num_blocks=len(units))
    ds = ds.map_batches(
        read_unit,
        batch_size=1,
        batch_format="numpy",
        fn_kwargs={"plan": plan, "block_rows": cfg.preprocess_batch_size},
        **ray_compat.cpu_stage(cfg.read_num_cpus, retries=cfg.task_retries),
    )
    return ray_compat.blocks_of(ds, cfg.preprocess_batch_size)  # one CPU task per block


def preprocessed_dataset(plan: Plan, units: list[dict], cfg: ScoreCfg, model_cfg: ModelCfg):
    """Read, fetch, preprocess: the model's input columns, with each row's key, id and
    pass-through columns. Every stage works on pyarrow batches and reads its columns by name."""
    ds = read_dataset(plan, units, cfg)
    media = tuple(m for m in FETCHED if getattr(model_cfg, m) is not None)
    if media and cfg.fetch_actors:  # a slow host holds no decode CPU
        ds = ds.map_batches(
            FetchStage,
            batch_size=cfg.fetch_batch_size,
            batch_format="pyarrow",
            fn_constructor_args=(cfg.fetch, cfg.fetch_blocks_in_flight, 1.0, media),
            **ray_compat.io_actor_stage(
                cfg.fetch_actors, cfg.fetch_blocks_in_flight, cfg.task_retries
            ),
        )
    return ds.map_batches(
        preprocess,
        batch_size=cfg.preprocess_batch_size,
        batch_format="pyarrow",
        fn_kwargs={"model_cfg": model_cfg, "fetch_cfg": cfg.fetch},
        # >= 1 MiB reserved: keeps this stage out of the model actors
        **ray_compat.cpu_stage(
            cfg.preprocess_num_cpus,
            cfg.preprocess_max_tasks,
            max(1, cfg.preprocess_memory_mb),
            cfg.task_retries,
        ),
    )


def build_dataset(plan: Plan, units: list[dict], cfg: ScoreCfg, model_cfg: ModelCfg):
    """The whole graph, up to the output table (output.output_schema)."""
    ds = preprocessed_dataset(plan, units, cfg, model_cfg)
    return ds.map_batches(
        ModelStage,
        batch_size=cfg.model_batch_size,
        batch_format="pyarrow",
        fn_constructor_args=(
            cfg.model_dir,
            cfg.model_torch_threads,
            plan.passthrough,
            cfg.runtime,
            cfg.precision,
        ),
        **ray_compat.actor_stage(
            cfg.model_min_actors,
            cfg.model_max_actors,
            cfg.model_num_cpus,
            cfg.model_num_gpus,
            cfg.task_retries,
        ),
    )


def runtime_of(cfg: ScoreCfg) -> str:
    return f"{cfg.runtime}/{cfg.precision}"


def prepare_onnx(cfg: ScoreCfg) -> None:
    from ..models.runtime import onnx_cuda, onnx_dir

    onnx_dir(cfg.model_dir, cfg.precision, cuda=onnx_cuda() and cfg.model_num_gpus > 0)


def job_manifest(input_spec: str, plan: Plan, cfg: ScoreCfg, model_cfg: ModelCfg) -> dict:
    """What `_job.json` records: a resume checks the first four and the fingerprints."""
    return {
        "input": to_uri(*filesystem(input_spec)).rstrip("/"),
        # a resume refuses another runtime too: int8 rows beside fp32 ones would be two models
        "model": {"name": model_cfg.name, "version": model_cfg.version, "runtime": runtime_of(cfg)},
        "columns": to_dict(cfg.columns),
        "inputs": resume.fingerprint_inputs(plan.files),
        "checkpoint": resume.fingerprint_checkpoint(cfg.model_dir),
        "mmsent_version": __version__,
        "config": to_dict(cfg),
    }


def run(
    input_spec: str, output: str, cfg: ScoreCfg, overwrite: bool = False, address: str | None = None
) -> dict:
    started = time.time()
    if cfg.model_dir:  # workers may start elsewhere: hand them an absolute path
        cfg = dataclasses.replace(cfg, model_dir=str(Path(cfg.model_dir).resolve()))
    model_cfg = model_config(cfg.model_dir)
    if cfg.runtime == "onnx":  # built here once, before actors start (they would each wait)
        prepare_onnx(cfg)
    reserved = {name for name, _ in output_fields(model_cfg)}
    plan = make_plan(input_spec, cfg, reserved, model_cfg.tabular_columns())
    output = to_uri(*filesystem(output))
    manifest = job_manifest(input_spec, plan, cfg, model_cfg)
    with lease.hold(output):  # one job at a time on OUTPUT, before anything there is touched
        cut_short = resume.prepare(output, manifest, overwrite)
        done = resume.read_keys(output)
        rows_before = sum(len(v) for v in done.values())
        units = [{"file": f, "skip": resume.to_ranges(done.get(f, []))} for f in plan.files]

        where = ray_compat.connect(address)
        ds = build_dataset(plan, units, cfg, model_cfg)
        executed = time.time()
        ds.write_parquet(output, **ray_compat.write_args(cfg.write_num_cpus, cfg.max_rows_per_file))
        return account(
            plan,
            output,
            cfg,
            manifest,
            started=started,
            pipeline_s=time.time() - executed,
            rows_before=rows_before,
            cut_short=cut_short,
            ray=where,
        )
