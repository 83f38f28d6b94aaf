"""What the trainer does to captions each step: trigger word first, tag shuffling and dropout.

Tag captions ("zxq, 1girl, red hair, ink") are shuffled and dropped tag by tag (kohya
`--shuffle_caption`/`--keep_tokens`/`--caption_tag_dropout_rate`); sentence captions are kept
whole. Caption dropout trains a share of steps on the trigger word alone, so the style attaches to
the trigger rather than to the words of the captions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class CaptionRules:
    trigger_word: str = ""
    shuffle_tags: bool = False
    keep_tags: int = 0  # leading tags that never move or drop (after the trigger word)
    tag_dropout: float = 0.0
    caption_dropout: float = 0.0

    @property
    def varies(self) -> bool:
        """Whether a caption can differ between steps (then text embeddings can't be cached)."""
        return self.shuffle_tags or self.tag_dropout > 0 or self.caption_dropout > 0


def split_tags(caption: str) -> list[str]:
    return [t.strip() for t in caption.split(",") if t.strip()]


def detect_style(captions: list[str]) -> str:
    """'tags' when most captions are comma lists of short phrases, else 'sentences'."""
    if not captions:
        return "sentences"
    tagged = 0
    for caption in captions:
        tags = split_tags(caption)
        if len(tags) >= 3 and sum(len(t.split()) for t in tags) / len(tags) <= 3:
            tagged += 1
    return "tags" if tagged >= len(captions) / 2 else "sentences"


def full_caption(caption: str, trigger_word: str) -> str:
    """The caption as trained without augmentation: the trigger word first, exactly once."""
    parts = [t for t in split_tags(caption) if t != trigger_word]
    return ", ".join(([trigger_word] if trigger_word else []) + parts)


def augment(caption: str, rules: CaptionRules, style: str, rng: random.Random) -> str:
    """The caption for one step. The trigger word is always first and never dropped."""
    if rules.caption_dropout and rng.random() < rules.caption_dropout:
        return rules.trigger_word
    if style != "tags" or not (rules.shuffle_tags or rules.tag_dropout):
        return full_caption(caption, rules.trigger_word)
    tags = [t for t in split_tags(caption) if t != rules.trigger_word]
    fixed, rest = tags[:rules.keep_tags], tags[rules.keep_tags:]
    if rules.tag_dropout:
        rest = [t for t in rest if rng.random() >= rules.tag_dropout]
    if rules.shuffle_tags:
        rng.shuffle(rest)
    return ", ".join(([rules.trigger_word] if rules.trigger_word else []) + fixed + rest)
