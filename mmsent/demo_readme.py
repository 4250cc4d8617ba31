"""The README.md written next to a demo dump (`mmsent make-demo-data`): how every part was made."""

from __future__ import annotations

from collections import Counter


def _table(rows: list[dict], modalities: tuple[str, ...]) -> str:
    c = Counter((r["slice"], r["label"]) for r in rows)
    cols = {  # column -> whether a row counts in it
        "with image": lambda r: bool(r["image"]),
        "broken image": lambda r: "broken_image" in r,
        "with counts": lambda r: r["likes"] is not None,
        "with audio": lambda r: bool(r["audio"]),
        "broken audio": lambda r: "broken_audio" in r,
    }
    cols = {k: f for k, f in cols.items() if _modality(k) in modalities}
    lines = [
        "| slice | negative | neutral | positive | " + " | ".join(cols) + " |",
        "| --- | ---: | ---: | ---: |" + " ---: |" * len(cols),
    ]
    for s in ["real_text", *(f"{m}_carries" for m in modalities[1:])]:
        part = [r for r in rows if r["slice"] == s]
        counts = " | ".join(str(sum(f(r) for r in part)) for f in cols.values())
        lines.append(
            f"| {s} | {c[(s, 'negative')]} | {c[(s, 'neutral')]} | {c[(s, 'positive')]} | {counts} |"
        )
    return "\n".join(lines)


def _modality(column: str) -> str:
    return {"counts": "tabular"}.get(column.split()[-1], column.split()[-1])


def _mix(mix: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0%}" for k, v in mix.items())


def _captions(captions: dict[str, list[str]]) -> str:
    return "\n".join(
        f"- reads **{k}** on its own: " + "; ".join(f"`{c}`" for c in v)
        for k, v in captions.items()
    )


def readme(rows: list[dict], args) -> str:
    from .demo_data import CAPTIONS, PHOTO_SENTIMENT, SUFFIXES

    ms = tuple(getattr(args, "modalities", ("text", "image")))
    n = Counter(r["slice"] for r in rows)
    photos = "\n".join(f"- **{k}**: {', '.join(v)}" for k, v in PHOTO_SENTIMENT.items())
    broken = Counter(r["broken_image"] for r in rows if "broken_image" in r)
    preset = "demo" if ms == ("text", "image") else "demo-multimodal"
    slices = (
        "one clearly labelled slice" if len(ms) == 2 else "a clearly labelled slice per modality"
    )
    columns = (
        "`posts.jsonl`, one post per line: `id`, `created_at`, `user`, `lang` (made up: random times in\n"
        "one week of May 2024, 399 pseudonyms), `text`, `image` (path relative to this folder, or null),\n"
        "`label` (negative / neutral / positive), `slice`, `source`, `photo` (which photo the image was\n"
        "cut from); `caption_reads` and `photo_stands_for` on the `image_carries` slice; `broken_image`\n"
        "where the image file was damaged on purpose. `images/<id>.jpg`: one file per post with a photo."
    )
    if ms != ("text", "image"):
        columns = _columns(ms)
    parts = [
        f"""# mmsent demo dump

Written by `mmsent make-demo-data` (seed {args.seed}). **No real image-text sentiment data is in
here**: real texts with real human labels, real photos, and {slices} built by
rule. Read this before quoting any number measured on it.

{_table(rows, ms)}

## Files and columns

{columns}

Train on it: `mmsent train --config {preset} data.train=<this folder>/posts.jsonl`.

## How every part was made

**`real_text` ({n["real_text"]} posts): real texts, real labels.** The
texts and ratings of the VADER ground truth (Hutto & Gilbert 2014; tweets, movie-review
snippets, NYT editorial snippets; `mmsent/data/vader-ground-truth`), each the mean of about 20 human
ratings, mapped to 3 classes (< -0.5 negative, > 0.5 positive, else neutral). Only posts from the
held-out 20% split of the shipped default model (`mmsent.train.default_model.splits`, seed 13)
are used, so a model fine-tuned from the default model is never scored on text it was trained
on. A share of {args.photo_rate:.0%} of these posts carry a photo drawn at random: those texts
never came with images, so their photos say nothing about their labels, as most photos on real
posts say nothing about their sentiment.
"""
    ]
    if len(ms) > 2:
        parts.append(
            "\nThey carry counts and clips the same way (below). Each slice below is a post's text "
            "and one other modality, which decides; a slice's posts have no other photo, counts or "
            "clip, so the model can learn where each modality decides and where it is noise.\n"
        )
    if "image" in ms:
        parts.append(
            f"""
**`image_carries` ({n["image_carries"]} posts): the photo decides,
by rule.** Texts are short captions written for this demo, not real posts, drawn independently
of the photo (with a suffix from {SUFFIXES!r}, also drawn independently):

{_captions(CAPTIONS)}

Each post gets a photo from one of three groups. Which photo stands for which sentiment is a
**convention of this demo**, chosen by us and rated by nobody: pets, treats, flowers, a gift and
a scenic view for positive; grey rubble-like gravel, a bare brick wall, trampled grey grass and a
barren moon surface for negative (the seeds' "Great job" under a photo of a mess); everyday
objects, vehicles, portraits and space photos for neutral:

{photos}

Label rule: a positive or negative photo gives its label whatever the caption says ("Great job,
everyone" under gravel is sarcasm: negative; "I can't cope" under the cat: positive); a neutral
photo leaves the caption's own reading. So on this slice the text alone cannot decide, and the
photo alone cannot decide for neutral photos. The same {sum(len(v) for v in PHOTO_SENTIMENT.values())} photos appear in every split (as
different crops), so image-only scores here measure recognising these photos, not reading
sentiment in photos a model has never seen; the slice tests whether a model *uses* the image
when the text does not decide.
"""
        )
    if "tabular" in ms:
        parts.append(_tabular(n["tabular_carries"], args))
    if "audio" in ms:
        parts.append(_audio(n["audio_carries"], args))
    if "image" in ms:
        parts.append(
            f"""
**Photos.** The real photos that ship inside scikit-image (`skimage/data`: CC0 or public
domain per `skimage.data` docstrings), matplotlib (`mpl-data/sample_data`: Grace Hopper, a gift
box clip-art drawing) and scikit-learn (`datasets/images`: china.jpg, flower.jpg, CC BY 2.0, see
its README.txt), listed by `mmsent.sample_data.real_photos()`. Every post has its own copy:
downscaled to 512 px, then a random crop of 55-100% of the area (aspect 3:4 to 4:3), a
horizontal flip half of the time, brightness and contrast x0.85-1.15, downscaled to at most
{args.max_side} px, JPEG quality 70-92.

**Broken images** ({args.broken_rate:.0%} of image links, {dict(broken)}): what real dumps have:
`missing` (no file), `truncated` (the first 600 bytes of the JPEG), `html` (an error page saved
as .jpg). `mmsent train` trains these posts text-only and reports how many there were.
"""
        )
    return "".join(parts)


def _columns(ms: tuple[str, ...]) -> str:
    from .demo_data import TABULAR

    out = [
        "`posts.jsonl`, one post per line: `id`, `created_at`, `user`, `lang` (made up: random times "
        "in one week of May 2024, 399 pseudonyms), `text`, `label` (negative / neutral / positive), "
        "`slice`, `source`, `caption_reads` on every `<modality>_carries` slice"
    ]
    if "image" in ms:
        out.append(
            "`image` (path relative to this folder, or null), `photo` (which photo the image was cut "
            "from), `photo_stands_for` on `image_carries`, `broken_image` where the file was damaged "
            "on purpose; `images/<id>.jpg`: one file per post with a photo"
        )
    if "tabular" in ms:
        out.append(
            "the tabular columns " + ", ".join(f"`{c}`" for c in TABULAR) + " (all null on a post "
            "without counts; single cells null where a scrape lost them), `reception` on "
            "`tabular_carries`"
        )
    if "audio" in ms:
        out.append(
            "`audio` (path relative to this folder, or null), `sound` (which kind of sound the clip "
            "is), `sound_stands_for` on `audio_carries`, `broken_audio` where the file was damaged on "
            "purpose; `audio/<id>.wav|flac|ogg`: one file per post with a clip"
        )
    return "; ".join(out) + "."


def _tabular(n: int, args) -> str:
    from .demo_data import LIKES_PER_REPLY, PLATFORMS, READING_MIX, TABULAR_CAPTIONS

    ranges = ", ".join(f"{k} {lo:g}-{hi:g}" for k, (lo, hi) in LIKES_PER_REPLY.items())
    return f"""
**`tabular_carries` ({n} posts): how the post was received decides, by rule.** Captions are
announcements written for this demo (their own set, so the text tells which slice a post is in):

{_captions(TABULAR_CAPTIONS)}

Each post gets a **reception** (positive / negative / neutral: {_mix(READING_MIX)}) and its
counts follow it, a **convention of this demo**: `replies` is drawn log-normal (median 12), then
`likes` = replies x a factor drawn log-uniform in the reception's range ({ranges}): many likes
per reply is a well-received post; more replies than likes is the internet's "ratio", a post
being piled on. `followers` (log-normal, median 2000), `hour` (of `created_at`, UTC), `platform`
(one of {", ".join(PLATFORMS)}) and `verified` (60% above 50k followers, else 5%) say nothing about the label.
Label rule: a positive or negative reception gives its label whatever the caption says (a
ratioed "we did it, thank you all" is negative); a neutral one leaves the caption's reading.

Real-text posts have counts too ({args.tabular_rate:.0%} of them; the rest have none, every
column null), made the same way from a reception drawn at random: they say nothing about the label.
"""


def _audio(n: int, args) -> str:
    from .demo_data import AUDIO_CAPTIONS, AUDIO_FILES, AUDIO_RATES, READING_MIX, SOUNDS

    files = ", ".join(f"{k} ({v[0]} {v[1]}, {v[2]:.0%})" for k, v in AUDIO_FILES.items())
    rates = ", ".join(f"{k} Hz ({v:.0%})" for k, v in AUDIO_RATES.items())
    kinds = "; ".join(f"{k}: {' or '.join(v)}" for k, v in SOUNDS.items())
    broken = "`missing`, `truncated` (the first 300 bytes), `html` (an error page in its place)"
    return f"""
**`audio_carries` ({n} posts): the sound decides, by rule.** Captions are posts about a sound,
written for this demo (their own set):

{_captions(AUDIO_CAPTIONS)}

Each post gets a clip that stands for positive, negative or neutral ({_mix(READING_MIX)}); which
sound stands for what is a **convention of this demo**: {kinds}. Every clip is synthesised with
numpy (`mmsent.demo_data.sound`): notes of 1-4 harmonics with random weights (a random timbre)
and a 10 ms attack; a rising major arpeggio over two octaves (root 196-392 Hz, seven notes of
0.08-0.14 s, each bending up 2 semitones and decaying: bright), a falling minor arpeggio over an
octave (root 110-220 Hz, four notes of 0.25-0.4 s, each sagging 3 semitones: the "sad
trombone"), one steady held note (110-523 Hz, 1-2 s, no decay: a hum) or room tone (smoothed
white noise, 1-2 s); 0-0.3 s of silence either side, white background noise 15-35 dB below the
sound, peak 0.2-0.9. Written with soundfile as {files} at {rates}, 10% in
stereo. Label rule: a positive or negative sound gives its label
whatever the caption says; a neutral one leaves the caption's reading.

Real-text posts have a clip at a rate of {args.audio_rate:.0%}, of a kind drawn the same way with a
random reading: it says nothing about the label. **Broken clips** ({args.broken_rate:.0%} of audio
links): {broken}; `mmsent train` trains those posts without audio and counts them
(`data/audio.json`).
"""
