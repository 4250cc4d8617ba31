"""Audio preprocessing (mmsent.audio) on synthetic signals written by soundfile, every audio error
code from real bad inputs, a fuzz of decode_audio, and the audio_cnn tower.

    .venv/bin/python -m pytest tests/test_audio.py -q
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmsent import codes
from mmsent.audio import audio_batch, decode_audio, mel_edges, mel_filters, resample
from mmsent.config import AudioCfg, AudioTowerCfg
from mmsent.models.towers import build_tower

CFG = AudioCfg()
AUDIO_CODES = {
    codes.AUDIO_EMPTY,
    codes.AUDIO_BYTES_TOO_LARGE,
    codes.AUDIO_FORMAT_UNSUPPORTED,
    codes.AUDIO_DECODE_ERROR,
    codes.AUDIO_TOO_LONG,
    codes.AUDIO_TOO_SHORT,
    codes.AUDIO_SILENT,
}


def tone(freq: float, seconds: float = 1.0, rate: int = 16_000, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(round(seconds * rate)) / rate)).astype(
        np.float32
    )


def encode(x: np.ndarray, rate: int = 16_000, fmt: str = "WAV", subtype: str | None = None):
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def peak_hz(x: np.ndarray, rate: int) -> float:
    return float(np.argmax(np.abs(np.fft.rfft(x))) * rate / len(x))


@pytest.mark.parametrize("band", [3, 20, 40, 62])
def test_a_sine_lands_in_its_mel_band(band):
    centre = mel_edges(CFG)[band + 1]
    mel, status = decode_audio(encode(tone(centre)), CFG)
    assert status == codes.OK
    profile = mel.mean(1)  # (n_mels,) over frames
    assert profile.argmax() == band
    far = np.r_[profile[: max(0, band - 2)], profile[band + 3 :]]
    assert profile[band] - far.max() > 1.0  # in clip standard deviations


def test_filterbank_triangles_cover_the_range_with_unit_area():
    fb = mel_filters(CFG)
    assert fb.shape == (CFG.n_mels, CFG.n_fft // 2 + 1)
    assert (fb.sum(1) > 0).all()  # no band falls between two FFT bins
    wide = (mel_edges(CFG)[2:] - mel_edges(CFG)[:-2]) > 8 * CFG.sample_rate / CFG.n_fft
    area = fb.sum(1) * CFG.sample_rate / CFG.n_fft
    np.testing.assert_allclose(area[wide], 1.0, rtol=0.02)


@pytest.mark.parametrize("rate", [8_000, 22_050, 44_100, 48_000])
@pytest.mark.parametrize("freq", [440.0, 3_000.0])
def test_resampling_keeps_a_tones_frequency(rate, freq):
    y = resample(tone(freq, 1.0, rate), rate, 16_000)
    assert len(y) == 16_000
    assert abs(peak_hz(y, 16_000) - freq) <= 1.0
    assert np.sqrt(np.mean(y**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_resampling_down_removes_tones_above_the_new_nyquist():
    y = resample(tone(11_000, 1.0, 44_100), 44_100, 16_000)  # 11 kHz > 8 kHz: would alias to 5 kHz
    assert np.sqrt(np.mean(y**2)) < 1e-3


@pytest.mark.parametrize(
    "fmt, subtype",
    [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("WAVEX", "PCM_24"), ("FLAC", None), ("OGG", "VORBIS")]
    + [("OGG", "OPUS"), ("MP3", None)],
)
def test_round_trip_of_each_format_in_stereo(fmt, subtype):
    rate, centre = 48_000 if subtype == "OPUS" else 44_100, mel_edges(CFG)[31]  # Opus: 48 kHz
    x = np.stack([tone(centre, 2.0, rate), tone(centre, 2.0, rate, amp=0.2)], 1)
    mel, status = decode_audio(encode(x, rate, fmt, subtype), CFG)
    assert status == codes.OK
    assert mel.dtype == np.float32 and mel.shape[0] == CFG.n_mels
    # 2 s at 16 kHz -> 1 + (32000 - 400) // 160 frames (lossy codecs may pad a few samples)
    assert abs(mel.shape[1] - 198) <= 4
    assert mel.mean(1).argmax() == 30
    assert abs(mel.mean()) < 1e-4 and mel.std() == pytest.approx(1.0, rel=1e-3)


def long_wav(seconds: float) -> bytes:
    return encode(tone(500, seconds))


def wav_header_only(frames_claimed: int, rate: int = 16_000) -> bytes:
    """A PCM WAV header claiming `frames_claimed` samples, with none of them present."""
    data = frames_claimed * 2
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, 2 * rate, 2, 16)
        + b"data"
        + struct.pack("<I", data)
    )


FLAC = encode(tone(500, 1.0), fmt="FLAC")
BAD = {
    "empty": (b"", codes.AUDIO_EMPTY),
    "random bytes": (np.random.default_rng(0).bytes(4000), codes.AUDIO_DECODE_ERROR),
    "an HTML error page": (b"<html><body>404 Not Found</body></html>", codes.AUDIO_DECODE_ERROR),
    "a WAV cut inside its header": (long_wav(1.0)[:30], codes.AUDIO_DECODE_ERROR),
    "a WAV header with no samples": (wav_header_only(16_000), codes.AUDIO_TOO_SHORT),
    "a FLAC cut in its body": (FLAC[: len(FLAC) // 2], codes.AUDIO_DECODE_ERROR),
    "a WAV with NaN samples": (encode(np.full(4000, np.nan, np.float32), subtype="FLOAT"),)
    + (codes.AUDIO_DECODE_ERROR,),
    "MP4 / M4A": (b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00" + bytes(200),)
    + (codes.AUDIO_FORMAT_UNSUPPORTED,),
    "WebM": (b"\x1aE\xdf\xa3" + bytes(200), codes.AUDIO_FORMAT_UNSUPPORTED),
    "AIFF (libsndfile reads it, not allowed)": (encode(tone(500), fmt="AIFF"),)
    + (codes.AUDIO_FORMAT_UNSUPPORTED,),
    "a 1 kHz sample rate": (wav_header_only(1, 1000) + bytes(2), codes.AUDIO_FORMAT_UNSUPPORTED),
    "AAC (ADTS)": (b"\xff\xf1\x50\x80" + bytes(300), codes.AUDIO_FORMAT_UNSUPPORTED),
    "9 channels": (encode(np.tile(tone(500)[:, None], (1, 9))), codes.AUDIO_FORMAT_UNSUPPORTED),
    "11 s (cap 10 s)": (long_wav(11.0), codes.AUDIO_TOO_LONG),
    "50 ms": (long_wav(0.05), codes.AUDIO_TOO_SHORT),
    "digital silence": (encode(np.zeros(16_000, np.float32)), codes.AUDIO_SILENT),
    "a -70 dBFS tone": (encode(tone(500, amp=10 ** (-70 / 20))), codes.AUDIO_SILENT),
}


@pytest.mark.parametrize("name", list(BAD))
def test_each_bad_input_gets_its_code(name):
    data, expected = BAD[name]
    assert decode_audio(data, CFG) == (None, expected)


def test_byte_cap_missing_and_truncation():
    assert decode_audio(None, CFG) == (None, codes.MISSING)
    small = AudioCfg(max_audio_bytes=1000)
    assert decode_audio(long_wav(1.0), small) == (None, codes.AUDIO_BYTES_TOO_LARGE)
    mel, status = decode_audio(long_wav(11.0), AudioCfg(truncate=True))
    assert status == codes.OK and mel.shape == (CFG.n_mels, CFG.frames())
    # a WAV cut inside its samples decodes what arrived (libsndfile reads the frames present)
    mel, status = decode_audio(long_wav(1.0)[:16_000], CFG)
    assert status == codes.OK and mel.shape[1] == 1 + (7_978 - 400) // 160


def test_config_refuses_a_minimum_shorter_than_one_window():
    with pytest.raises(ValueError, match="min_seconds"):
        AudioCfg(min_seconds=0.01)


def test_batch_pads_masks_and_keeps_known_errors():
    clips = [long_wav(1.0), None, b"junk", long_wav(2.0)]
    b = audio_batch(clips, CFG, known=[None, None, None, codes.IMAGE_FETCH_TIMEOUT])
    T = CFG.frames()
    assert b["mel"].shape == (4, CFG.n_mels, T) and b["mel_mask"].shape == (4, T)
    statuses = [codes.OK, codes.MISSING, codes.AUDIO_DECODE_ERROR, codes.IMAGE_FETCH_TIMEOUT]
    assert list(b["audio_status"]) == statuses
    assert list(b["has_audio"]) == [True, False, False, False]
    assert b["mel_mask"][0].sum() == 98 and not b["mel_mask"][1:].any()
    assert not b["mel"][0, :, 98:].any() and not b["mel"][1:].any()


def _seeds() -> list[bytes]:
    x = tone(700, 0.3, 22_050)
    return [encode(x, 22_050, f, s) for f, s in [("WAV", None), ("FLAC", None), ("OGG", None)]] + [
        encode(x, 22_050, "MP3", None)
    ]


SEEDS = _seeds()
FUZZ = settings(
    max_examples=200, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)
)
FUZZ_CFG = AudioCfg(max_seconds=1.0)


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data) - 1)) if data else 0
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if op == "flip" and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 256))]
        else:
            del data[i:]
    return bytes(data)


def check(data: bytes) -> None:
    mel, status = decode_audio(data, FUZZ_CFG)
    if status == codes.OK:
        assert mel.shape[0] == FUZZ_CFG.n_mels and 0 < mel.shape[1] <= FUZZ_CFG.frames()
        assert np.isfinite(mel).all()
    else:
        assert mel is None and status in AUDIO_CODES


@FUZZ
@given(st.binary(max_size=2048))
def test_fuzz_arbitrary_bytes_never_raise(data):
    check(data)


@FUZZ
@given(st.sampled_from([b"RIFF", b"fLaC", b"OggS", b"ID3", b"\xff\xfb"]), st.binary(max_size=512))
def test_fuzz_random_bodies_behind_real_signatures(sig, body):
    check(sig + body)


@FUZZ
@given(mutated())
def test_fuzz_mutated_real_files(data):
    check(data)


def tower_inputs(clips, cfg=CFG):
    b = audio_batch(clips, cfg)
    return {k: torch.from_numpy(b[k]) for k in ("mel", "mel_mask")}, b["has_audio"]


def test_tower_shapes_with_absent_rows():
    tower = build_tower(AudioTowerCfg()).eval()
    inputs, has = tower_inputs([long_wav(1.0), None, long_wav(10.0)])
    with torch.no_grad():
        out = tower(inputs)
    T = CFG.frames() // 8  # three blocks, each halves time
    assert tower.modality == "audio" and out.pooled.shape == (3, 128)
    assert out.tokens.shape == (3, T, 128) and out.token_mask.shape == (3, T)
    assert out.token_mask[0].sum() == 98 // 8 + 1 and out.token_mask[2].all()
    assert not out.token_mask[1].any() and not out.pooled[1].any() and not out.tokens[1].any()
    assert np.array_equal(has, [True, False, True])


def test_tower_output_does_not_depend_on_padding():
    tower = build_tower(AudioTowerCfg(features=AudioCfg(max_seconds=2.0))).eval()
    clip = encode(tone(900, 0.7) + tone(2_500, 0.7, amp=0.1))
    with torch.no_grad():
        short = tower(tower_inputs([clip], AudioCfg(max_seconds=2.0))[0])
        long = tower(tower_inputs([clip], AudioCfg(max_seconds=6.0))[0])
    torch.testing.assert_close(short.pooled, long.pooled, rtol=1e-4, atol=1e-5)


def test_tower_trains_and_freezes():
    tower = build_tower(AudioTowerCfg()).train()
    inputs, _ = tower_inputs([long_wav(1.0), encode(tone(3_000, 2.0))])
    tower(inputs).pooled.sum().backward()
    grads = [p.grad for p in tower.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    tower.set_trainable(0)
    assert not any(p.requires_grad for p in tower.parameters())
    tower.set_trainable(1)  # the projection only
    assert {n.split(".")[0] for n, p in tower.named_parameters() if p.requires_grad} == {"proj"}
    tower.train()
    assert all(
        not m.training for m in tower.blocks.modules() if isinstance(m, torch.nn.BatchNorm2d)
    )
