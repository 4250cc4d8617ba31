"""The README.md written next to a demo dump (`mmsent make-demo-data`): how every part was made."""

from __future__ import annotations

from collections import Counter


def _table(rows: list[dict]) -> str:
    c = Counter((r["slice"], r["label"]) for r in rows)
    lines = [
        "| slice | negative | neutral | positive | with image | broken image |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in ("real_text", "image_carries"):
        part = [r for r in rows if r["slice"] == s]
        lines.append(
            f"| {s} | {c[(s, 'negative')]} | {c[(s, 'neutral')]} | {c[(s, 'positive')]} | "
            f"{sum(bool(r['image']) for r in part)} | {sum('broken_image' in r for r in part)} |"
        )
    return "\n".join(lines)


def readme(rows: list[dict], args) -> str:
    from .demo_data import CAPTIONS, PHOTO_SENTIMENT, SUFFIXES

    caps = "\n".join(
        f"- reads **{k}** on its own: " + "; ".join(f"`{c}`" for c in v)
        for k, v in CAPTIONS.items()
    )
    photos = "\n".join(f"- **{k}**: {', '.join(v)}" for k, v in PHOTO_SENTIMENT.items())
    broken = Counter(r["broken_image"] for r in rows if "broken_image" in r)
    return f"""# mmsent demo dump

Written by `mmsent make-demo-data` (seed {args.seed}). **No real image-text sentiment data is in
here**: real texts with real human labels, real photos, and one clearly labelled slice built by
rule. Read this before quoting any number measured on it.

{_table(rows)}

## Files and columns

`posts.jsonl`, one post per line: `id`, `created_at`, `user`, `lang` (made up: random times in
one week of May 2024, 399 pseudonyms), `text`, `image` (path relative to this folder, or null),
`label` (negative / neutral / positive), `slice`, `source`, `photo` (which photo the image was
cut from); `caption_reads` and `photo_stands_for` on the `image_carries` slice; `broken_image`
where the image file was damaged on purpose. `images/<id>.jpg`: one file per post with a photo.

Train on it: `mmsent train --config demo data.train=<this folder>/posts.jsonl`.

## How every part was made

**`real_text` ({sum(r["slice"] == "real_text" for r in rows)} posts): real texts, real labels.** The
texts and ratings of the VADER ground truth (Hutto & Gilbert 2014; tweets, movie-review
snippets, NYT editorial snippets; `mmsent/data/vader-ground-truth`), each the mean of about 20 human
ratings, mapped to 3 classes (< -0.5 negative, > 0.5 positive, else neutral). Only posts from the
held-out 20% split of the shipped default model (`mmsent.train.default_model.splits`, seed 13)
are used, so a model fine-tuned from the default model is never scored on text it was trained
on. A share of {args.photo_rate:.0%} of these posts carry a photo drawn at random: those texts
never came with images, so their photos say nothing about their labels, as most photos on real
posts say nothing about their sentiment.

**`image_carries` ({sum(r["slice"] == "image_carries" for r in rows)} posts): the photo decides,
by rule.** Texts are short captions written for this demo, not real posts, drawn independently
of the photo (with a suffix from {SUFFIXES!r}, also drawn independently):

{caps}

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
