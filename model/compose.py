"""Compose training captions from a VLM caption, attribute scores and the object's class.

Contract: `compose(raw, class_noun, named, template)` renders `CaptionTemplate.template` twice:
- `composed`: `{object}` = article + named attributes + class noun ("a red striped star"),
  the domain-specific caption that names the object's class and main attributes;
- `object_caption`: `{object}` = article + `object_token` + class noun ("a <obj> star"), the
  variant the training recipe uses: the object embedding supplies identity, so the caption keeps
  only the class noun and the placeholder marks where the object is referred to.
Slots: `{raw}` (the VLM caption), `{class}`, `{object}`, and any attribute group name (`{scene}`),
which renders the phrase of that group's top value when it passed the threshold, else nothing.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from model.attributes import Scores, Vocabulary

FIXED_SLOTS = frozenset({"raw", "class", "object"})


@dataclass(frozen=True)
class CaptionTemplate:
    """How captions are worded; every field is part of the caption config hash."""

    template: str = "a photo of {object} {scene}. {raw}"
    object_phrase: str = "{color} {texture} {material} {shape} {class}"  # adjectives, then noun
    object_token: str = "<obj>"


def slots(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def check_template(template: CaptionTemplate, groups: Iterable[str]) -> None:
    """Fail before any work on a slot that names neither a fixed slot nor an attribute group."""
    known = FIXED_SLOTS | set(groups)
    unknown = (slots(template.template) | slots(template.object_phrase)) - known
    if unknown or "object" in slots(template.object_phrase):
        raise ValueError(f"caption template slots {sorted(unknown)} are unknown "
                         f"(known: {sorted(known)}; {{object}} only in `template`)")


def named_attributes(scores: Scores, vocabulary: Vocabulary) -> dict[str, str]:
    """group -> phrase of its top value, for groups whose top value passed the threshold."""
    named = {}
    for group, probabilities in scores.items():
        value, probability = max(probabilities.items(), key=lambda item: item[1])
        if probability >= vocabulary.threshold_of(group):
            named[group] = vocabulary.groups[group].phrases()[value]
    return named


def object_class(class_name: str | None, scores: Scores, category_group: str = "category") -> str:
    """The class noun: the image's own `class_name`, else the top `category` value."""
    if class_name:
        return class_name
    if category_group in scores:
        return max(scores[category_group].items(), key=lambda item: item[1])[0]
    return "object"


def compose(raw: str, class_noun: str, named: Mapping[str, str],
            template: CaptionTemplate) -> tuple[str, str]:
    """(composed caption, object-placeholder caption); see the module docstring."""
    fill = {group: named.get(group, "") for group in slots(template.template)
            | slots(template.object_phrase)}
    fill.update({"raw": raw, "class": class_noun})
    phrase = _tidy(template.object_phrase.format_map({**fill, "object": ""}))
    composed = template.template.format_map({**fill, "object": _with_article(phrase)})
    placeholder = _with_article(f"{template.object_token} {class_noun}")
    object_caption = template.template.format_map({**fill, "object": placeholder})
    return _tidy(composed), _tidy(object_caption)


def _with_article(phrase: str) -> str:
    return f"{'an' if phrase[:1].lower() in 'aeiou' else 'a'} {phrase}"


def _tidy(text: str) -> str:
    """Whitespace and punctuation left by empty slots; "star star" when shape = class."""
    text = re.sub(r"\s+", " ", text)
    text = re.sub(r"\s+([,.;:])", r"\1", text)
    text = re.sub(r"([,.;:])(?:\s*[,.;:])+", r"\1", text)
    text = re.sub(r"\b(\w+)(?: \1\b)+", r"\1", text)
    return text.strip(" ,;:")
