"""Typed configs: one dataclass per component, nested in `ModelCfg`, saved in every checkpoint.

Configs are read from YAML/JSON and dotted overrides (`fusion.head=attention`); unknown keys are
errors, and overrides that are `None` are dropped rather than applied.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parent / "presets"  # shipped in the package (wheel too)
RUNTIMES = ("torch", "onnx")  # what runs the model (mmsent.models.runtime)
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
# every modality a model may read, in the order of its fusion weights (ModelCfg.modalities)
MODALITIES = ("text", "image", "tabular", "audio")


@dataclass
class TextTowerCfg:
    kind: str = "hf_text"  # registered tower name
    pretrained: str = "minilm"  # bundled encoder name or a local transformers directory
    max_length: int = 128  # tokens per window
    max_chunks: int = 8  # windows per text: longer texts are scored by chunks, pooled
    stride: int = 16  # tokens shared by consecutive windows
    pooling: str = "mean"  # mean | cls
    trainable_layers: int = 0  # top encoder layers left trainable
    lora_rank: int = 0  # low-rank adapters on the linear layers of the encoder (0: none)
    lora_alpha: float = 16.0
    lora_layers: int = -1  # adapters on the top N encoder layers only (-1: all)


@dataclass
class ImageTowerCfg:
    kind: str = "efficientnet_lite0"  # efficientnet_lite0 | hf_vision | torchvision_resnet
    pretrained: str | None = "imagenet"  # bundled weights name, a local directory, or None (random)
    image_size: int = 224
    trainable_layers: int = 0  # top blocks left trainable (0: frozen)
    mean: list[float] | None = None  # normalisation; None: the tower's own
    std: list[float] | None = None


@dataclass
class AudioCfg:
    """Audio decoding and its log-mel spectrogram (mmsent.audio): the audio tower's input."""

    sample_rate: int = 16_000  # every clip is resampled to this rate
    n_fft: int = 400  # STFT window = FFT size: 25 ms at 16 kHz
    hop: int = 160  # 10 ms between frames
    n_mels: int = 64  # HTK mel scale, triangles of unit area (Slaney's norm)
    fmin: float = 20.0  # below: hum and DC, no voice
    fmax: float | None = None  # None: sample_rate / 2
    top_db: float = 80.0  # dynamic range kept below a clip's loudest mel bin
    max_seconds: float = 10.0  # the spectrogram's length; a longer clip is audio_too_long...
    truncate: bool = False  # ... unless True: then its first max_seconds are kept
    min_seconds: float = 0.1  # a shorter clip is audio_too_short
    max_audio_bytes: int = 10 * 1024 * 1024
    max_channels: int = 8  # caps what one clip decodes to (frames x channels floats)
    min_sample_rate: int = 4_000  # below it no voice band is left (a header may claim 1 Hz)
    max_sample_rate: int = 192_000
    silence_dbfs: float = -60.0  # a clip whose peak is below this is audio_silent
    # the only libsndfile formats decoded (WAVEX: WAV with an extensible header)
    formats: list[str] = field(default_factory=lambda: ["WAV", "WAVEX", "FLAC", "OGG", "MP3"])

    def __post_init__(self):
        if self.min_seconds * self.sample_rate < self.n_fft or self.hop < 1:
            raise ValueError("audio: min_seconds must hold one STFT window (n_fft), hop >= 1")
        if self.max_seconds < self.min_seconds or self.n_mels < 1:
            raise ValueError("audio: need max_seconds >= min_seconds and n_mels >= 1")

    def frames(self) -> int:
        """Spectrogram frames of a max_seconds clip: the fixed time axis of every batch."""
        return 1 + (round(self.max_seconds * self.sample_rate) - self.n_fft) // self.hop


@dataclass
class AudioTowerCfg:
    kind: str = "audio_cnn"  # registered tower name
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])  # one conv block each
    out_dim: int = 128
    dropout: float = 0.1
    trainable_layers: int = -1  # -1: all (trained from scratch); N: the top N blocks; 0: frozen
    features: AudioCfg = field(default_factory=AudioCfg)


@dataclass
class TabularTowerCfg:
    """Numeric and categorical columns of a post (counts, hour, platform, verified, ...).

    `mean`, `std` and `vocab` are statistics of the training split, filled by
    mmsent.tabular.fit_tabular: kept in the config (saved in every checkpoint) because the
    embedding tables' shapes and the CPU preprocess stage, which never loads weights, need them."""

    kind: str = "tabular_mlp"
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    log_numeric: list[str] = field(default_factory=list)  # sign(x) log1p(|x|) first: counts
    embed_dim: int = 16  # per-feature embedding
    hidden: int = 128  # the tower's output size
    dropout: float = 0.1
    max_categories: int = 1000  # vocabulary per categorical column; the rest: the unknown bucket
    min_count: int = 1  # a category seen fewer times in training is unknown
    clip: float = 10.0  # normalised numeric values are clipped to +-clip
    trainable_layers: int = -1  # -1: all (trained from scratch); 0: frozen
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    vocab: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self):
        names = self.numeric + self.categorical
        if not names or len(set(names)) != len(names):
            raise ValueError("tabular: name at least one column, each once")
        if not set(self.log_numeric) <= set(self.numeric):
            raise ValueError("tabular: log_numeric must be numeric columns")


@dataclass
class FusionCfg:
    head: str = "gated"  # concat | attention | cross_attention | gated | late
    hidden: int = 256
    num_heads: int = 4
    dropout: float = 0.1
    modality_dropout: float = 0.0  # training only: drop a whole modality of a post at this rate


@dataclass
class PreprocessCfg:
    max_image_bytes: int = 20 * 1024 * 1024
    # pixels decoded (width x height; a JPEG after reduced-scale decoding): decompression bombs
    max_image_pixels: int = 50_000_000
    max_text_chars: int = 20_000
    # the only formats handed to Pillow's parsers (JPEG includes MPO, many phones' JPEGs)
    image_formats: list[str] = field(
        default_factory=lambda: ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"]
    )


@dataclass
class ModelCfg:
    name: str = "mmsent-default"
    version: str = "0.1.0"
    labels: list[str] = field(default_factory=lambda: ["negative", "neutral", "positive"])
    text: TextTowerCfg | None = field(default_factory=TextTowerCfg)
    image: ImageTowerCfg | None = field(default_factory=ImageTowerCfg)
    tabular: TabularTowerCfg | None = None  # columns named here are read from each post
    audio: AudioTowerCfg | None = None
    fusion: FusionCfg = field(default_factory=FusionCfg)
    preprocess: PreprocessCfg = field(default_factory=PreprocessCfg)
    description: str = ""

    def modalities(self) -> list[str]:
        """Modalities this model reads, in a fixed order (the order of fusion weights)."""
        return [m for m in MODALITIES if getattr(self, m) is not None]

    def tabular_columns(self) -> list[str]:
        """The columns the tabular tower reads from each post, by name (none without one)."""
        t = self.tabular
        return [] if t is None else [*t.numeric, *t.categorical]


@dataclass
class FetchCfg:
    """Image fetching (mmsent.io.fetch): every fetch ends within `deadline_s`, whatever the host."""

    timeout_s: float = 10.0  # each socket operation (connect, each read), clipped to the deadline
    retries: int = 2  # extra attempts on transient errors (timeouts, 429, 5xx, resets)
    backoff_s: float = 0.5  # doubled after every attempt, with jitter
    max_bytes: int = 20 * 1024 * 1024  # decoded body bytes (a gzip bomb stops here)
    concurrency: int = 16  # parallel fetches per batch
    schemes: list[str] = field(default_factory=lambda: ["s3", "http", "https", "file"])
    block_private_networks: bool = False  # SSRF guard: refuse loopback/private/link-local targets
    max_redirects: int = 3
    # CIDRs the SSRF guard lets through (e.g. an in-cluster image store)
    allow_networks: list[str] = field(default_factory=list)
    # one fetch in all: DNS, connect, headers, body, every retry and backoff; a host that trickles
    # bytes is cut off here (None: no overall limit, only timeout_s per operation; not advised)
    deadline_s: float | None = 30.0

    def __post_init__(self):
        if self.timeout_s <= 0 or (self.deadline_s is not None and self.deadline_s <= 0):
            raise ValueError("fetch: timeout_s and deadline_s must be positive")
        if self.retries < 0 or self.max_redirects < 0 or self.max_bytes < 0:
            raise ValueError("fetch: retries, max_redirects and max_bytes must be >= 0")
        if self.concurrency < 1:
            raise ValueError("fetch: concurrency must be >= 1")


@dataclass
class ServeFetchCfg(FetchCfg):
    """Image- and audio-URL fetching for the online API: safe defaults, so a partial override
    keeps the guard."""

    timeout_s: float = 5.0
    retries: int = 1
    concurrency: int = 8
    schemes: list[str] = field(default_factory=lambda: ["http", "https"])  # "s3" may be added
    block_private_networks: bool = True
    deadline_s: float | None = 10.0  # a slow image host cannot hold a request longer


@dataclass
class ServeCfg:
    """`args` of the Serve app (mmsent.serve.app:build_app), e.g. under `applications[].args` in
    mmsent/presets/serve/<name>.yaml. Batching knobs are not here: they are the model deployment's
    `user_config` (ServeBatchCfg), changeable without restarting replicas."""

    __pydantic_config__ = {"extra": "forbid"}  # the app's pydantic args model rejects unknown keys
    model_dir: str | None = None  # checkpoint directory (None: the shipped default model)
    runtime: str = "torch"  # torch | onnx (mmsent.models.runtime)
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 | int8
    max_posts: int = 32  # posts in one request (more: 422)
    max_body_bytes: int = 16 * 1024 * 1024  # request body (more: 413)
    max_image_bytes: int = 8 * 1024 * 1024  # one image: uploaded, base64 or fetched (more: 413)
    # one audio clip, likewise (the lower of this and the checkpoint's audio cap applies)
    max_audio_bytes: int = 8 * 1024 * 1024
    # all image and audio bytes of one request (uploaded, base64, fetched; fetches stop at it):
    # more is 413 (named before audio came; one budget: what a request holds in memory)
    max_request_image_bytes: int = 32 * 1024 * 1024
    # pixels decoded per image (the lower of this and the checkpoint's preprocess cap; more: 413):
    # refused before decoding (the size is in the header); a 7000x7000 PNG takes ~0.7 s to decode
    max_image_pixels: int = 16_000_000
    decode_slots: int = 2  # images decoded at once per ingress replica, across all its requests
    health_cache_s: float = 1.0  # /healthz answers from a model ping at most this old
    # env var with the bearer token; unset: no auth; set but empty: the replica refuses to start
    auth_token_env: str | None = "MMSENT_API_TOKEN"
    fetch: ServeFetchCfg = field(default_factory=ServeFetchCfg)

    def __post_init__(self):
        check_runtime(self.runtime, self.precision)
        if "file" in self.fetch.schemes:
            raise ValueError("fetch.schemes: 'file' would let clients read the server's files")
        sizes = (
            "max_posts",
            "max_body_bytes",
            "max_image_bytes",
            "max_audio_bytes",
            "max_request_image_bytes",
            "max_image_pixels",
            "decode_slots",
        )
        if min(getattr(self, k) for k in sizes) < 1 or self.health_cache_s < 0:
            raise ValueError(f"{', '.join(sizes)} must be positive, health_cache_s >= 0")
        if self.max_request_image_bytes < self.max_image_bytes:
            raise ValueError("max_request_image_bytes must be >= max_image_bytes")
        for net in self.fetch.allow_networks:
            ipaddress.ip_network(net, strict=False)  # ValueError names a malformed CIDR


@dataclass
class ServeBatchCfg:
    """`user_config` of the SentimentModel deployment (reconfigure() applies it in place)."""

    __pydantic_config__ = {"extra": "forbid"}
    max_batch_size: int = 32  # posts per forward pass
    batch_wait_timeout_s: float = 0.01  # how long the first post of a batch waits for others

    def __post_init__(self):
        if self.max_batch_size < 1 or self.batch_wait_timeout_s < 0:
            raise ValueError("max_batch_size must be >= 1 and batch_wait_timeout_s >= 0")


@dataclass
class TrainCfg:
    epochs: int = 3
    batch_size: int = 32
    eval_batch_size: int = 64
    lr: float = 3e-4  # towers' trainable parts (adapters, unfrozen layers)
    head_lr: float = 1e-3  # fusion head
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06  # linear warm-up, then linear decay to 0
    grad_clip: float = 1.0
    class_weights: bool = True  # inverse class frequency in the loss
    seed: int = 0
    length_buckets: bool = True  # batch texts of similar length together (less padding)
    # `mmsent train` (mmsent/train/trainer.py): schedule, stopping, hardware
    freeze_epochs: int = 0  # first N epochs: fusion head only; then the towers' top layers (model.<tower>.trainable_layers) and adapters
    patience: int = (
        0  # early stopping: stop after N epochs without a better validation macro-F1 (0: never)
    )
    min_delta: float = 0.0  # the smallest gain in validation macro-F1 that counts as better
    amp: bool = True  # mixed precision (bf16, else fp16 with loss scaling) where CUDA exists; CPU runs in fp32
    num_threads: int = 0  # torch threads per process (0: torch's default)
    workers: int = 1  # > 1: Ray Train TorchTrainer with this many DDP workers (the same loop)
    use_gpu: bool = False  # Ray Train: one GPU per worker
    cpus_per_worker: float = 1.0
    ray_address: str | None = None  # None: $RAY_ADDRESS, else a new local Ray instance on 127.0.0.1
    max_failures: int = 0  # Ray Train: restarts from the last epoch checkpoint after a worker dies


@dataclass
class ReadCfg:
    """Reading dumps (mmsent.io.dumps), for bulk scoring (`read`) and training (`data.read`)."""

    # one JSONL line, CSV record or Parquet row's string/binary cells (more: record_too_large);
    # above preprocess.max_image_bytes, so an inline image gets the image's own code
    max_record_bytes: int = 32 * 1024 * 1024
    max_record_lines: int = 1000  # physical lines of one CSV record (quoted newlines)
    max_json_array_bytes: int = 64 * 1024 * 1024  # a .json file holding one array is parsed whole
    # relative image paths may leave the input file's folder (else: image_url_forbidden)
    images_outside_input_dir: bool = False

    def __post_init__(self):
        if min(self.max_record_bytes, self.max_record_lines, self.max_json_array_bytes) < 1:
            raise ValueError("read: max_record_bytes, max_record_lines, max_json_array_bytes >= 1")


@dataclass
class DataCfg:
    """Labelled posts: JSONL, Parquet or CSV (a file or a folder of them), local or s3://."""

    train: str | None = None
    val: str | None = None  # given split files; when absent, val/test are split from `train`
    test: str | None = None
    format: str = "auto"  # auto (from the file suffix) | jsonl | parquet | csv
    text_column: str = "text"
    image_column: str | None = (
        "image"  # path (relative to the data file), file://, http(s)://, s3://
    )
    audio_column: str | None = "audio"  # as image_column
    label_column: str = "label"
    group_column: str | None = None  # splits stratify by it; ablations are reported per group
    id_column: str | None = "id"  # kept in the split files when present
    labels: list[str] | None = (
        None  # class names in order (None: the model's if they cover the data)
    )
    label_map: dict[str, str] | None = (
        None  # raw label (as text) -> class name, e.g. {"4": positive}
    )
    split: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])  # train / val / test
    split_seed: int = 0
    limit: int = 0  # read at most this many rows per file (0: all)
    read: ReadCfg = field(default_factory=ReadCfg)  # caps, relative image paths
    # share of training posts without an image given a bundled photo unrelated to their label
    # (seeded by split_seed): the fusion head learns to weigh down images that say nothing
    unrelated_photos: float = 0.0


@dataclass
class TrainRunCfg:
    """`mmsent train --config mmsent/presets/train/<name>.yaml`: the model, its data, the schedule."""

    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    fetch: FetchCfg = field(default_factory=FetchCfg)
    # a checkpoint dir or "default": its config under `model`, its weights where they fit
    init_from: str | None = None
    init_exclude: list[str] = field(default_factory=list)  # name prefixes left fresh, e.g. [head.]
    out_dir: str = "runs"
    name: str | None = None  # run folder name (None: <config name>-<date>-<time>)
    evals: list[str] = field(default_factory=list)  # steps run on best/ (mmsent.train.finish)
    card: dict[str, str] = field(default_factory=dict)  # model card text (trained_on, ...)
    export_to: str | None = None  # best/ + its card copied here ("default": the shipped model)


@dataclass
class ScoreColumnsCfg:
    id: str = "id"
    text: str = "text"
    # URL or path (relative: to the input file's folder, and inside it; see ReadCfg), or bytes
    image: str = "image_url"
    audio: str = "audio_url"  # as `image`: URL, path or bytes (WAV, FLAC, OGG, MP3)
    # tabular columns are the model's own (model.tabular.numeric + categorical), read by name
    passthrough: list[str] | None = None  # copied to the output; None: all other columns


@dataclass
class ScoreCfg:
    """Bulk scoring (mmsent.pipeline): presets in mmsent/presets/score/<name>.yaml."""

    model_dir: str | None = None  # checkpoint directory (None: the shipped default model)
    runtime: str = "torch"  # torch | onnx (ONNX Runtime; the export is built on first use)
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 | int8 (mmsent.models.runtime)
    format: str = "auto"  # jsonl | csv | parquet | auto (from each file's extension)
    columns: ScoreColumnsCfg = field(default_factory=ScoreColumnsCfg)
    read: ReadCfg = field(default_factory=ReadCfg)  # caps, relative image paths
    fetch: FetchCfg = field(default_factory=FetchCfg)
    read_num_cpus: float = 0.0  # readers only split lines: holding a CPU would starve the others
    # the fetch stage's actors: they reserve no CPU (they wait on the network); 0: fetch in the
    # decode tasks (then a slow image host holds a decode task's CPU)
    fetch_actors: int = 1
    fetch_batch_size: int = 16  # rows per fetch call: small, so a slow host holds few others' bytes
    fetch_blocks_in_flight: int = 32  # calls each fetch actor works on at once (threads)
    preprocess_batch_size: int = 32  # rows per CPU task (decode + tokenize)
    preprocess_num_cpus: float = 1.0
    preprocess_max_tasks: int | None = None  # concurrent CPU tasks (None: as many as CPUs allow)
    preprocess_memory_mb: int = 512  # Ray memory reserved per CPU task: caps tasks per node
    model_batch_size: int = 64
    model_min_actors: int = 1
    model_max_actors: int = 1
    model_num_cpus: float = 1.0
    model_num_gpus: float = 0.0  # per actor; fractional shares a GPU (0.5: two actors per GPU)
    model_torch_threads: int = 0  # 0: torch's default (Ray sets it to the actor's num_cpus)
    write_num_cpus: float = 0.0
    # retries of a task or model batch whose process died (killed, out of memory): a node lost
    # mid-task is retried, a batch that keeps killing its worker ends the job instead of looping
    task_retries: int = 5
    object_store_mb: float | None = None  # MiB of blocks between stages (None: Ray's default)
    max_rows_per_file: int = 100_000  # Parquet rows per output file (a hard cap)
    verify: bool = True  # re-count the input at the end: the summary reports missing/duplicates

    def __post_init__(self):
        if self.format not in ("auto", "jsonl", "csv", "parquet"):
            raise ValueError(f"format must be auto, jsonl, csv or parquet, not {self.format!r}")
        if min(self.preprocess_batch_size, self.model_batch_size, self.max_rows_per_file) < 1:
            raise ValueError("batch sizes and max_rows_per_file must be >= 1")
        if not 1 <= self.model_min_actors <= self.model_max_actors:
            raise ValueError("need 1 <= model_min_actors <= model_max_actors")
        check_runtime(self.runtime, self.precision)


def check_runtime(runtime: str, precision: str) -> None:
    if runtime not in RUNTIMES or precision not in PRECISIONS:
        raise ValueError(f"runtime must be one of {RUNTIMES} and precision one of {PRECISIONS}")


class ConfigError(ValueError):
    pass


def from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass `cls` from a plain dict, recursing into nested config dataclasses."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where or cls.__name__}: unknown keys {unknown}; known: {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        sub = _dataclass_in(hints[name])
        if sub is not None and value is not None:
            value = from_dict(sub, value, f"{where}{name}.")
        kwargs[name] = value
    return cls(**kwargs)


def _dataclass_in(hint: Any) -> type | None:
    if dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if dataclasses.is_dataclass(arg):
                return arg
    return None


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply `a.b=value` overrides (values parsed as YAML) to a nested dict, in place."""
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        value = yaml.safe_load(raw)
        if value is None and raw.strip().lower() not in ("null", "none", "~"):
            continue
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
        node[leaf] = None if raw.strip().lower() in ("null", "none", "~") else value
    return data


def read_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    text = path.read_text()
    data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    return data or {}


def resolve_preset(name_or_path: str, kind: str) -> Path:
    """A preset name (`mmsent/presets/<kind>/<name>.yaml`) or a path to a YAML/JSON file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml", ".json") or p.exists():
        return p
    candidate = CONFIG_DIR / kind / f"{name_or_path}.yaml"
    if not candidate.exists():
        known = sorted(x.stem for x in (CONFIG_DIR / kind).glob("*.yaml"))
        raise ConfigError(f"no {kind} preset named {name_or_path!r}; known: {known}")
    return candidate


def load_config(
    cls: type, source: str | Path | dict | None, overrides: list[str] | None = None, kind: str = ""
):
    """Typed config from a preset name, a file, or a dict, with dotted overrides applied."""
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, dict):
        data = json.loads(json.dumps(source))
    else:
        data = read_file(resolve_preset(str(source), kind))
    return from_dict(cls, apply_overrides(data, overrides))
