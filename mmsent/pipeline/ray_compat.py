"""The Ray-version-sensitive calls of bulk scoring, in one place (written against Ray 2.60).

ds.map_batches(fn, **cpu_stage(num_cpus=1, max_tasks=None, memory_mb=512, retries=5))
ds.map_batches(Cls, **actor_stage(min_size=1, max_size=2, num_cpus=1, num_gpus=0.5, retries=5))
ds.map_batches(Cls, **io_actor_stage(size=1, calls=16))   # network-bound: no CPU, threads
ds = blocks_of(ds, 32)          # stream a generator UDF's output in blocks of 32 rows
ds.write_parquet(path, **write_args(num_cpus=0, max_rows_per_file=100_000))
limit_object_store(512)  # MiB of blocks in flight between stages
connect(address=None)   # local Ray on 127.0.0.1, or RAY_ADDRESS / --address
"""

from __future__ import annotations

import os
from typing import Any


def cpu_stage(
    num_cpus: float, max_tasks: int | None = None, memory_mb: int = 0, retries: int = -1
) -> dict:
    """Resources of a task stage. A stage with a memory reservation is never fused into the actor
    stage after it: Ray fuses a task stage into an actor stage when their remote args are equal
    (operator_fusion.are_remote_args_compatible), which would run preprocessing inside the model
    actors, one batch at a time, instead of beside them. `retries`: of a task whose worker died
    (Ray Data's default, -1, retries forever: a job would never end)."""
    import ray.data

    args: dict[str, Any] = {"num_cpus": num_cpus, "max_retries": retries}
    if max_tasks:
        args["compute"] = ray.data.TaskPoolStrategy(size=max_tasks)
    if memory_mb:
        args["memory"] = memory_mb * 2**20
    return args


def actor_stage(
    min_size: int, max_size: int, num_cpus: float, num_gpus: float, retries: int = -1
) -> dict:
    """An actor pool; a dead actor is restarted (always), the batch it held is retried `retries`
    times (Ray Data's default retries it forever)."""
    import ray.data

    args: dict[str, Any] = {
        "compute": ray.data.ActorPoolStrategy(min_size=min_size, max_size=max_size),
        "num_cpus": num_cpus,
        "max_restarts": -1,
        "max_task_retries": retries,
    }
    if num_gpus:  # never ask for 0 GPUs explicitly; > 0 on a GPU-less cluster waits forever
        args["num_gpus"] = num_gpus
    return args


def io_actor_stage(size: int, calls: int, retries: int = -1) -> dict:
    """A pool of `size` actors that reserve no CPU, each running up to `calls` batches at once in
    threads: for work that waits on the network (the UDF must be thread-safe)."""
    import ray.data

    strategy = ray.data.ActorPoolStrategy(
        size=size,
        max_tasks_in_flight_per_actor=calls,
        max_concurrent_calls_per_actor=calls,
        enable_true_multi_threading=True,
    )
    return {"compute": strategy, "num_cpus": 0, "max_restarts": -1, "max_task_retries": retries}


def blocks_of(ds, rows: int):
    """`ds` re-cut into blocks of `rows` rows as they stream. Without it a generator UDF's yields
    are buffered into blocks of up to DataContext.target_max_block_size (128 MiB): a whole file
    would reach the next stage as one block, i.e. one task. Ray fuses this streaming repartition
    into the map before it only when their resources match; unfused, its tasks would ask for the
    default 1 CPU each, and a job whose model actors and CPU tasks hold every CPU would wait
    forever. `repartition` takes no resources, so the op's are set here: re-cutting is a copy."""
    import ray
    from ray.data._internal.logical.operators import StreamingRepartition

    ds = ds.repartition(target_num_rows_per_block=rows)
    op = ds._logical_plan.dag
    assert isinstance(op, StreamingRepartition), f"Ray {ray.__version__}: {type(op).__name__}"
    op.ray_remote_args["num_cpus"] = 0
    return ds


def limit_object_store(mb: float | None) -> None:
    """Cap the bytes of blocks this job keeps in Ray's object store (None: Ray's default, a
    share of the store, i.e. of the node's RAM). Without a cap a fast stage runs ahead of a slow
    one: decode tasks finish a 10,000-post dump long before the model does and park every
    decoded image in the store, so memory grows with the input instead of staying flat."""
    import ray.data

    options = ray.data.DataContext.get_current().execution_options
    options.resource_limits = options.resource_limits.copy(
        object_store_memory=mb * 2**20 if mb else float("inf")
    )


def write_args(num_cpus: float, max_rows_per_file: int) -> dict:
    """Files of max_rows_per_file/2 to max_rows_per_file rows (pyarrow enforces the cap; the last
    file may be smaller): without a minimum, every model batch would become a file of its own."""
    return {
        "min_rows_per_file": max(1, max_rows_per_file // 2),
        "max_rows_per_file": max_rows_per_file,
        "ray_remote_args": {"num_cpus": num_cpus},
    }


def connect(address: str | None = None, **local_args) -> str:
    """Join the cluster at `address` or RAY_ADDRESS; else start a local Ray bound to 127.0.0.1.
    Returns where it runs. An already initialised Ray (tests, notebooks) is used as it is."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        # read once, when Ray is first imported: a local Ray then binds to 127.0.0.1 only
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    from ray._private import ray_constants

    if ray.is_initialized():
        return "existing"
    if address:
        ray.init(address=address)
        return address
    if ray_constants.ENABLE_RAY_CLUSTER:
        raise RuntimeError(
            "Ray was imported before RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set: "
            "a local Ray would listen beyond 127.0.0.1"
        )
    ray.init(include_dashboard=False, **local_args)
    return "local"
