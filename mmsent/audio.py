"""Audio bytes -> log-mel spectrogram, in numpy (soundfile decodes; no torchaudio, no librosa).
Bad input never raises: it becomes a status code from mmsent.codes.

    cfg = AudioCfg()                            # 16 kHz, 64 mels, 25 ms windows every 10 ms
    mel, status = decode_audio(wav_bytes, cfg)  # (n_mels, t) float32, t <= cfg.frames(); or None
    batch = audio_batch([wav_bytes, None], cfg)
    batch["mel"] (B, n_mels, T) float16   batch["mel_mask"] (B, T) bool   batch["has_audio"] (B,)

Each clip is downmixed to mono, resampled to `sample_rate`, cut into Hann-windowed frames, turned
into power spectra and mel bands (HTK mel scale, triangles of unit area), then log10, floored at
`top_db` below the clip's peak and standardised over the clip: loudness and microphone gain do
not reach the model, only the shape of the sound. Padding frames are 0 and masked out.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Sequence

import numpy as np

from . import codes
from .config import AudioCfg

# What bytes that libsndfile refused start with: an allowed format's signature means a corrupt
# body; another audio container's, a format we do not read (MP4 / M4A / 3GP: "ftyp" at 4).
ALLOWED_SIGNATURES = (b"RIFF", b"RF64", b"fLaC", b"OggS", b"ID3", b"\xff\xfb", b"\xff\xf3")
OTHER_AUDIO = (
    b"FORM",  # AIFF
    b".snd",  # AU
    b"caff",  # Core Audio
    b"\x1aE\xdf\xa3",  # Matroska / WebM
    b"#!AMR",
    b"wvpk",  # WavPack
    b"MAC ",  # Monkey's Audio
    b"\xff\xf1",  # AAC in ADTS frames (MPEG-4, MPEG-2)
    b"\xff\xf9",
)


def decode_audio(data: bytes | None, cfg: AudioCfg) -> tuple[np.ndarray | None, str]:
    """Audio bytes -> ((n_mels, t) float32 log-mel, "ok") or (None, error code); never raises."""
    if data is None:
        return None, codes.MISSING
    if len(data) == 0:
        return None, codes.AUDIO_EMPTY
    if len(data) > cfg.max_audio_bytes:
        return None, codes.AUDIO_BYTES_TOO_LARGE
    try:
        samples, rate, status = read_samples(data, cfg)
        if samples is None:
            return None, status
        return log_mel(resample(samples, rate, cfg.sample_rate), cfg), codes.OK
    except Exception:  # noqa: BLE001 - any decoder failure is a row error, never a batch crash
        return None, codes.AUDIO_DECODE_ERROR


def read_samples(data: bytes, cfg: AudioCfg) -> tuple[np.ndarray | None, int, str]:
    """Mono float32 samples at the file's rate, at most max_seconds of them, or an error code."""
    import soundfile as sf

    try:
        f = sf.SoundFile(io.BytesIO(data))
    except sf.SoundFileError:
        return None, 0, unreadable(data)
    with f:
        if f.format not in cfg.formats:
            return None, 0, codes.AUDIO_FORMAT_UNSUPPORTED
        rate = f.samplerate
        if not 0 < f.channels <= cfg.max_channels:
            return None, rate, codes.AUDIO_FORMAT_UNSUPPORTED
        if not cfg.min_sample_rate <= rate <= cfg.max_sample_rate:
            return None, rate, codes.AUDIO_FORMAT_UNSUPPORTED
        limit = int(cfg.max_seconds * rate)
        # one frame past the cap tells a long clip, whatever its header claims
        x = f.read(limit + 1, dtype="float32", always_2d=True)
    if len(x) > limit and not cfg.truncate:
        return None, rate, codes.AUDIO_TOO_LONG
    x = x[:limit].mean(axis=1)  # (n,) mono
    if len(x) < cfg.min_seconds * rate:
        return None, rate, codes.AUDIO_TOO_SHORT
    if not np.isfinite(x).all():  # float WAVs can carry NaN / inf
        return None, rate, codes.AUDIO_DECODE_ERROR
    if np.abs(x).max() < 10 ** (cfg.silence_dbfs / 20):
        return None, rate, codes.AUDIO_SILENT
    return x, rate, codes.OK


def unreadable(data: bytes) -> str:
    if data.startswith(ALLOWED_SIGNATURES):
        return codes.AUDIO_DECODE_ERROR
    if data.startswith(OTHER_AUDIO) or data[4:8] == b"ftyp":
        return codes.AUDIO_FORMAT_UNSUPPORTED
    return codes.AUDIO_DECODE_ERROR


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Band-limited resampling in the frequency domain: the spectrum is cut (an ideal low-pass, so
    no aliasing) or zero-extended to the new length. It treats the clip as periodic, which rings
    for a few ms at its two ends; that is all it costs, and it keeps every tone's frequency."""
    if rate == target:
        return x.astype(np.float32, copy=False)
    n_out = max(1, round(len(x) * target / rate))
    spec = np.fft.rfft(x.astype(np.float64))
    keep = np.zeros(n_out // 2 + 1, dtype=spec.dtype)
    k = min(len(spec), len(keep))
    keep[:k] = spec[:k]
    return (np.fft.irfft(keep, n_out) * (n_out / len(x))).astype(np.float32)


def log_mel(x: np.ndarray, cfg: AudioCfg) -> np.ndarray:
    """Mono samples at cfg.sample_rate -> (n_mels, t) standardised log-mel, t <= cfg.frames()."""
    frames = np.lib.stride_tricks.sliding_window_view(x, cfg.n_fft)[:: cfg.hop]  # (t, n_fft)
    frames = frames[: cfg.frames()]
    power = np.abs(np.fft.rfft(frames * hann(cfg.n_fft), axis=1)) ** 2  # (t, n_fft // 2 + 1)
    mel = power @ mel_filters(cfg).T
    db = np.log10(np.maximum(mel, 1e-10))  # (t, n_mels), in bels
    db = np.maximum(db, db.max() - cfg.top_db / 10)
    db = (db - db.mean()) / max(float(db.std()), 1e-5)
    return db.T.astype(np.float32)


@functools.lru_cache(maxsize=8)
def hann(n: int) -> np.ndarray:
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)  # periodic, as STFTs use
    w.flags.writeable = False  # cached: shared by every call
    return w


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)  # HTK


def mel_to_hz(m):
    return 700.0 * (10 ** (np.asarray(m) / 2595.0) - 1.0)


def mel_edges(cfg: AudioCfg) -> np.ndarray:
    """n_mels + 2 frequencies (Hz), equally spaced in mel: band i rises from edge i, peaks at
    edge i + 1 (its centre) and falls to 0 at edge i + 2."""
    return _edges(cfg.sample_rate, cfg.n_mels, cfg.fmin, cfg.fmax or cfg.sample_rate / 2)


def _edges(rate: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    return mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))


def mel_filters(cfg: AudioCfg) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangles on the HTK mel scale, each of unit area (Slaney's
    norm: white noise gives every band the same energy per Hz)."""
    top = cfg.fmax or cfg.sample_rate / 2
    return _filters(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, top)


@functools.lru_cache(maxsize=8)  # keyed by the parameters: configs are not hashable
def _filters(rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    edges = _edges(rate, n_mels, fmin, fmax)
    bins = np.arange(n_fft // 2 + 1) * rate / n_fft  # each FFT bin's frequency
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    tri = np.maximum(0.0, np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)))
    fb = tri * (2.0 / (hi - lo))
    fb.flags.writeable = False  # cached: shared by every call
    return fb


def audio_batch(
    datas: Sequence[bytes | None],
    cfg: AudioCfg,
    known: Sequence[str | None] | None = None,
    slot=None,
) -> dict[str, np.ndarray]:
    """Clips -> the audio tower's batch. `known`: a fetch error already known for a row; `slot`:
    held while one clip decodes (Serve's decode slots). The spectrogram is float16 (standardised
    values of a few units: 3 significant digits), half the bytes between processes and batches."""
    n, T, slot = len(datas), cfg.frames(), slot or contextlib.nullcontext()
    known = known if known is not None else [None] * n
    mel = np.zeros((n, cfg.n_mels, T), dtype=np.float16)
    mask = np.zeros((n, T), dtype=bool)
    status = []
    for i, (data, prior) in enumerate(zip(datas, known, strict=True)):
        if codes.is_error(prior):
            m, st = None, prior
        else:
            with slot:
                m, st = decode_audio(data, cfg)
        if m is not None:
            mel[i, :, : m.shape[1]] = m
            mask[i, : m.shape[1]] = True
        status.append(st)
    has = np.array([s == codes.OK for s in status], dtype=bool)
    return {
        "mel": mel,
        "mel_mask": mask,
        "has_audio": has,
        "audio_status": np.array(status, object),
    }
