"""`mmsent make-demo-data OUT`: a social-media dump for training demos, written to a folder or s3://.

    mmsent make-demo-data /tmp/demo                       # posts.jsonl + images/ + README.md
    mmsent make-demo-data s3://bucket/demo --real 600 --slice 200
    mmsent make-demo-data /tmp/demo-mm --modalities text,image,tabular,audio   # + counts, audio/

No image-text sentiment data set exists here, so the dump is built from real parts and says how
(README.md, written next to the posts): human-rated texts from mmsent/data/vader-ground-truth (only
the posts the shipped default model never trained on), real photos from installed packages
(mmsent.sample_data), and a labelled slice per extra modality where hand-written captions are
ambiguous or contradict it and, by rule, it decides the label: "image_carries" (the photo),
"tabular_carries" (likes per reply), "audio_carries" (a synthesised sound); a slice's posts
carry their text and that modality only. On the real-text posts photos, counts and clips are
present at random (or missing) and say nothing about the label.
"""

from __future__ import annotations

import argparse
import io
import json
from datetime import datetime, timedelta, timezone

import numpy as np
from PIL import Image, ImageEnhance

from .sample_data import real_photos
from .train.labelled import filesystem

LABELS = ["negative", "neutral", "positive"]
MODALITIES = ("text", "image", "tabular", "audio")
# what each photo stands for in the image_carries slice (a convention of this demo, see README)
PHOTO_SENTIMENT = {
    "positive": ["chelsea", "coffee", "flower", "Minduka_Present_Blue_Pack", "china"],
    "negative": ["gravel", "brick", "grass", "moon"],
    "neutral": ["camera", "coins", "motorcycle_left", "motorcycle_right", "rocket", "astronaut",
                "grace_hopper", "hubble_deep_field"],
}  # fmt: skip
CAPTIONS = {  # written for this demo: what the text says on its own
    "neutral": ["so this happened", "well.", "look at this", "no words", "guess what I found",
                "this is where I am right now", "here we go again", "just another day", "and that's that",
                "what do you think?", "ok then", "update:", "this.", "me right now", "saturday", "it is what it is",
                "first time here", "well well well", "today", "can't stop looking at this"],
    "positive": ["Great job, everyone", "just perfect", "love this for me", "best day ever", "wow, amazing",
                 "10/10 would recommend", "thanks so much for this", "exactly what I needed today",
                 "so proud of this", "living the dream"],
    "negative": ["I can't cope", "send help", "ugh. again.", "this is a problem", "not fair",
                 "I'm not okay", "why is it always me", "this is dangerous"],
}  # fmt: skip
TABULAR_CAPTIONS = {  # announcements: how they were received decides (tabular_carries)
    "neutral": ["we have an announcement", "new update is live", "our statement on today's news",
                "the results are in", "changes start on Monday", "read the full thread", "new pricing from May",
                "we're moving to a new office", "the vote is in", "it's official", "our plans for next year",
                "here is what happened", "a message from our CEO", "the schedule for this week"],
    "positive": ["we did it, thank you all", "so excited to share this", "huge news, we're thrilled",
                 "best quarter ever", "proud to announce this", "good news at last", "a big thank you to our fans"],
    "negative": ["sad news today", "we're sorry", "we got this wrong", "bad news, unfortunately",
                 "we have to cancel", "an apology to our customers", "a difficult decision"],
}  # fmt: skip
AUDIO_CAPTIONS = {  # posts about a sound: the sound decides (audio_carries)
    "neutral": ["sound on", "listen to this", "turn it up", "headphones on", "what do you hear?",
                "recorded this today", "the sound of today", "audio only", "play it", "one take", "voice memo",
                "new sound", "listen.", "guess the sound"],
    "positive": ["my happy sound", "this sound makes my day", "listen to this joy", "best tune ever",
                 "pure bliss in audio", "can't stop replaying this", "the sound of a good day"],
    "negative": ["the saddest sound", "this sound haunts me", "listen to my mood", "why does it sound like this",
                 "the sound of a bad day", "my heart in audio", "can't bear this sound"],
}  # fmt: skip
SUFFIXES = [
    "",
    "",
    "",
    "!",
    "...",
    " lol",
    " #weekend",
    " 🙃",
    " 😂",
    " 👀",
]  # drawn independently of labels
CAPTION_MIX = {"neutral": 0.4, "positive": 0.3, "negative": 0.3}
IMAGE_MIX = {"positive": 0.4, "negative": 0.4, "neutral": 0.2}
READING_MIX = {"positive": 0.35, "negative": 0.35, "neutral": 0.3}  # of counts and sounds
TABULAR = ["followers", "likes", "replies", "hour", "platform", "verified"]
PLATFORMS = ["x", "instagram", "tiktok", "mastodon", "threads"]
# likes per reply of each reception (the convention of tabular_carries): ratioed is negative
LIKES_PER_REPLY = {"positive": (8.0, 40.0), "neutral": (1.5, 4.0), "negative": (0.1, 0.5)}
SOUNDS = {"positive": ["rising_major"], "negative": ["falling_minor"],
          "neutral": ["held_note", "room_tone"]}  # fmt: skip
AUDIO_FILES = {
    "wav": ("WAV", "PCM_16", 0.5),
    "flac": ("FLAC", "PCM_16", 0.3),
    "ogg": ("OGG", "VORBIS", 0.2),
}  # fmt: skip  suffix -> format, subtype, share
AUDIO_RATES = {16_000: 0.6, 22_050: 0.3, 44_100: 0.1}


def slice_label(caption: str, reading: str) -> str:
    """The photo, counts or sound decides; a neutral one leaves the caption's own reading."""
    return reading if reading != "neutral" else caption


def jitter(photo: bytes, rng: np.random.Generator, max_side: int) -> bytes:
    """A post's own copy of a photo: random crop (55-100% of the area), flip, light, JPEG quality."""
    im = Image.open(io.BytesIO(photo)).convert("RGB")
    w, h = im.size
    area, aspect = rng.uniform(0.55, 1.0) * w * h, np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    cw, ch = min(w, int((area * aspect) ** 0.5)), min(h, int((area / aspect) ** 0.5))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    im = im.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.85, 1.15))
    im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.85, 1.15))
    im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=int(rng.integers(70, 93)))
    return buf.getvalue()


def pick(rng: np.random.Generator, mix: dict[str, float]) -> str:
    return str(rng.choice(list(mix), p=list(mix.values())))


def counts(reception: str, hour: int, rng: np.random.Generator) -> dict:
    """A post's tabular columns: likes per reply drawn from its reception's range
    (LIKES_PER_REPLY); followers, platform and verified unrelated to anything; 5% of those cells
    lost (None), as in scraped dumps."""
    replies = int(np.ceil(np.exp(rng.normal(np.log(12), 1.0))))
    lo, hi = LIKES_PER_REPLY[reception]
    likes = int(round(replies * np.exp(rng.uniform(np.log(lo), np.log(hi)))))
    followers = int(np.exp(rng.normal(np.log(2000), 1.8)))
    verified = bool(rng.random() < (0.6 if followers > 50_000 else 0.05))
    row = dict(followers=followers, likes=likes, replies=replies, hour=hour,
               platform=str(rng.choice(PLATFORMS)), verified=verified)  # fmt: skip
    for k in ("followers", "hour", "platform", "verified"):
        if rng.random() < 0.05:
            row[k] = None
    return row


def note(freq: float, seconds: float, rate: int, rng: np.random.Generator, bend=0.0, decay=True):
    """One note: 1-4 harmonics (random timbre), 10 ms attack, an exponential decay (or none), its
    pitch bent by `bend` semitones from start to end."""
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * freq * np.cumsum(2 ** (bend * t / seconds / 12)) / rate
    tone = sum(np.sin(h * phase) / h ** rng.uniform(1, 2) for h in range(1, rng.integers(2, 6)))
    fade = (
        np.exp(-t / (seconds * rng.uniform(0.4, 1.2)))
        if decay
        else np.minimum((seconds - t) / 0.05, 1)
    )
    return tone * np.minimum(t / 0.01, 1) * fade


def sound(kind: str, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A clip of one kind (SOUNDS), mono in [-1, 1], 0.56-2.6 s (the README says how)."""
    log_u = lambda lo, hi: float(np.exp(rng.uniform(np.log(lo), np.log(hi))))  # noqa: E731
    if kind == "rising_major":  # two octaves up in short notes, each bending up: bright
        root, dur = log_u(196, 392), rng.uniform(0.08, 0.14)
        steps = (0, 4, 7, 12, 16, 19, 24)
        x = np.concatenate([note(root * 2 ** (s / 12), dur, rate, rng, 2) for s in steps])
    elif kind == "falling_minor":  # an octave down in slow notes, each sagging: the sad trombone
        root, dur = log_u(110, 220), rng.uniform(0.25, 0.4)
        x = np.concatenate([note(root * 2 ** (s / 12), dur, rate, rng, -3) for s in (12, 7, 3, 0)])
    elif kind == "held_note":
        x = note(log_u(110, 523), rng.uniform(1.0, 2.0), rate, rng, decay=False)  # a steady hum
    else:  # room tone
        x = np.convolve(rng.normal(size=int(rng.uniform(1.0, 2.0) * rate)), np.ones(6) / 6, "same")
    pad = [np.zeros(int(rng.uniform(0, 0.3) * rate)) for _ in range(2)]
    x = np.concatenate([pad[0], x / np.abs(x).max(), pad[1]])
    x = x + rng.normal(size=len(x)) * 10 ** (-rng.uniform(15, 35) / 20)
    return (x / np.abs(x).max() * rng.uniform(0.2, 0.9)).astype(np.float32)


def clip_file(kind: str, rng: np.random.Generator) -> tuple[str, bytes]:
    """(suffix, file bytes): WAV, FLAC or OGG Vorbis at 16, 22.05 or 44.1 kHz, 10% in stereo."""
    import soundfile as sf

    suffix = pick(rng, {k: v[2] for k, v in AUDIO_FILES.items()})
    rate = int(pick(rng, {str(k): v for k, v in AUDIO_RATES.items()}))
    x = sound(kind, rate, rng)
    if rng.random() < 0.1:
        x = np.stack([x, x * rng.uniform(0.5, 1.0)], 1)
    buf = io.BytesIO()
    fmt, subtype, _ = AUDIO_FILES[suffix]
    sf.write(buf, x, rate, format=fmt, subtype=subtype)
    return suffix, buf.getvalue()


def damage(row: dict, column: str, files: dict, rng: np.random.Generator, cut: int) -> None:
    """What real dumps have: dead links, cut and wrong files (kind in `broken_<column>`)."""
    kind = str(rng.choice(["missing", "truncated", "html"]))
    row[f"broken_{column}"] = kind
    if kind == "missing":
        del files[row[column]]
    elif kind == "truncated":
        files[row[column]] = files[row[column]][:cut]
    else:
        files[row[column]] = b"<html><body>404 Not Found</body></html>"


def build(
    n_real: int,
    n_slice: int,
    photo_rate: float,
    broken_rate: float,
    seed: int,
    max_side: int,
    modalities: tuple[str, ...] = ("text", "image"),
    tabular_rate: float = 0.7,
    audio_rate: float = 0.3,
):
    """(rows, files): the posts and {relative path: bytes} of every file of the dump. A real_text
    post has a photo, counts and a clip at their rates (noise); a `<m>_carries` post has its text
    and that one modality only. Counts and clips draw from their own seeded streams: the text and
    image parts are the same whichever other modalities are asked for."""
    from .train.default_model import splits

    rng = np.random.default_rng(seed)
    rng_tab, rng_audio = np.random.default_rng([seed, 1]), np.random.default_rng([seed, 2])
    image = "image" in modalities
    photos = dict(real_photos(max_side=512)) if image else {}
    missing = {p for group in PHOTO_SENTIMENT.values() for p in group} - set(photos)
    if image and missing:
        raise SystemExit(f"photos not found in the installed packages: {sorted(missing)}")
    held_out = splits()[2]  # the default model's own test split: it never trained on these texts
    pick_real = rng.permutation(len(held_out))[: min(n_real, len(held_out))]
    slices = ["real_text"] * len(pick_real)
    slices += [f"{m}_carries" for m in MODALITIES[1:] if m in modalities for _ in range(n_slice)]
    t0 = datetime(2024, 5, 6, 8, 0, tzinfo=timezone.utc)
    rows, files = [], {}
    for k, part in enumerate(slices):
        pid = f"p{k:06d}"
        created = t0 + timedelta(seconds=int(rng.integers(7 * 86400)))
        row = {
            "id": pid,
            "created_at": created.isoformat(),
            "user": f"user_{int(rng.integers(1, 400)):03d}",
            "lang": "en",
        }
        cap, reading = None, None  # what the caption reads; what the deciding modality stands for
        if part == "real_text":
            i = int(pick_real[k])
            photo = str(rng.choice(list(photos))) if image and rng.random() < photo_rate else None
            row.update(
                text=held_out.texts[i],
                label=LABELS[int(held_out.labels[i])],
                slice=part,
                source=f"vader:{held_out.sources[i]}",
            )
        else:
            captions = {"image": CAPTIONS, "tabular": TABULAR_CAPTIONS, "audio": AUDIO_CAPTIONS}
            cap = pick(rng, CAPTION_MIX)
            reading = pick(rng, IMAGE_MIX if part == "image_carries" else READING_MIX)
            photo = str(rng.choice(PHOTO_SENTIMENT[reading])) if part == "image_carries" else None
            text = str(rng.choice(captions[part.removesuffix("_carries")][cap]))
            row.update(
                text=text + str(rng.choice(SUFFIXES)),
                label=slice_label(cap, reading),
                slice=part,
                source="demo:hand_written",
            )
        if image:
            row["photo"] = photo
            if part == "image_carries":
                row.update(caption_reads=cap, photo_stands_for=reading)
            row["image"] = None
            if photo:
                row["image"] = f"images/{pid}.jpg"
                files[row["image"]] = jitter(photos[photo], rng, max_side)
                if rng.random() < broken_rate:
                    damage(row, "image", files, rng, 600)
        # noise on real_text posts: drawn as in the slice, from a reading unrelated to the label
        noise = part == "real_text"
        if "tabular" in modalities:
            mine = part == "tabular_carries"
            present = mine or (noise and rng_tab.random() < tabular_rate)
            reception = reading if mine else pick(rng_tab, READING_MIX) if present else None
            values = counts(reception, created.hour, rng_tab) if present else {}
            row.update({c: values.get(c) for c in TABULAR})
            if mine:
                row.update(caption_reads=cap, reception=reading)
        if "audio" in modalities:
            mine = part == "audio_carries"
            present = mine or (noise and rng_audio.random() < audio_rate)
            reads = reading if mine else pick(rng_audio, READING_MIX) if present else None
            kind = str(rng_audio.choice(SOUNDS[reads])) if present else None
            row.update(sound=kind, audio=None)
            if mine:
                row.update(caption_reads=cap, sound_stands_for=reading)
            if kind:
                suffix, data = clip_file(kind, rng_audio)
                row["audio"] = f"audio/{pid}.{suffix}"
                files[row["audio"]] = data
                if rng_audio.random() < broken_rate:
                    damage(row, "audio", files, rng_audio, 300)
        rows.append(row)
    order = rng.permutation(len(rows))
    return [rows[i] for i in order], files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="mmsent make-demo-data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("out", help="folder or s3://bucket/prefix")
    ap.add_argument("--real", type=int, default=2400, help="posts with real human-rated text")
    ap.add_argument("--slice", type=int, default=600, help="posts of each <modality>_carries slice")
    ap.add_argument(
        "--modalities",
        default="text,image",
        help="of text,image,tabular,audio (text always): the columns, files and slices written",
    )
    ap.add_argument(
        "--photo-rate", type=float, default=0.4, help="share of real-text posts with a photo"
    )
    ap.add_argument(
        "--tabular-rate", type=float, default=0.7, help="share of real-text posts with counts"
    )
    ap.add_argument(
        "--audio-rate", type=float, default=0.3, help="share of real-text posts with a clip"
    )
    ap.add_argument(
        "--broken-rate", type=float, default=0.02, help="share of image / audio links broken"
    )
    ap.add_argument("--max-side", type=int, default=320)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    wanted = {m.strip() for m in a.modalities.split(",") if m.strip()}
    if "text" not in wanted or not wanted <= set(MODALITIES):
        ap.error(f"--modalities: text and any of {', '.join(MODALITIES[1:])}, not {a.modalities}")
    a.modalities = tuple(m for m in MODALITIES if m in wanted)
    rows, files = build(
        a.real, a.slice, a.photo_rate, a.broken_rate, a.seed, a.max_side,
        a.modalities, a.tabular_rate, a.audio_rate,
    )  # fmt: skip
    fs, root, _ = filesystem(a.out)
    fs.create_dir(root, recursive=True)
    files["posts.jsonl"] = "".join(json.dumps(r) + "\n" for r in rows).encode()
    from .demo_readme import readme

    files["README.md"] = readme(rows, a).encode()
    for rel, data in files.items():
        if "/" in rel:
            fs.create_dir(f"{root}/{rel.rsplit('/', 1)[0]}", recursive=True)
        with fs.open_output_stream(f"{root}/{rel}") as f:
            f.write(data)
    slices = ["real_text", *(f"{m}_carries" for m in a.modalities[1:])]
    summary = {s: sum(r["slice"] == s for r in rows) for s in slices}
    media = {
        f"{m}s" if m == "image" else m: sum(bool(r.get(m)) for r in rows)
        for m in ("image", "audio")
    }
    print(json.dumps({"out": a.out, "posts": len(rows), **summary, **media}))
    return 0
