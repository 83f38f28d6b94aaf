"""A1111-style generation parameters ("infotext"), as stored in a PNG's `parameters` text chunk.

Format (AUTOMATIC1111 `modules/infotext_utils.py`, also read by Forge, Civitai and ComfyUI nodes):

    <prompt, with <lora:name:strength> tags>
    Negative prompt: <negative prompt>
    Steps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512, Model: name, ...

Values that contain commas or colons are written in double quotes (A1111 `quote()`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

_PAIR = re.compile(r'\s*([\w ]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


@dataclass(frozen=True)
class Parameters:
    prompt: str
    negative_prompt: str = ""
    steps: int = 20
    sampler: str = "Euler"
    cfg_scale: float = 7.0
    seed: int = 0
    width: int = 512
    height: int = 512
    model: str = ""
    model_hash: str = ""
    loras: tuple[tuple[str, float], ...] = ()  # (name, strength)
    lora_hashes: tuple[tuple[str, str], ...] = ()  # (name, 12-hex AutoV3 hash)
    extra: dict[str, str] = field(default_factory=dict)


def _quote(text: str) -> str:
    if "," not in text and ":" not in text and '"' not in text and "\n" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            return json.loads(text)
        except ValueError:
            return text[1:-1]
    return text


def _strength(value: float) -> str:
    return f"{value:g}"


def format(p: Parameters) -> str:  # noqa: A001 - mirrors the module's purpose: infotext.format
    tags = "".join(f" <lora:{name}:{_strength(w)}>" for name, w in p.loras
                   if f"<lora:{name}:" not in p.prompt)
    lines = [p.prompt + tags]
    if p.negative_prompt:
        lines.append(f"Negative prompt: {p.negative_prompt}")
    pairs = [("Steps", str(p.steps)), ("Sampler", p.sampler), ("CFG scale", f"{p.cfg_scale:g}"),
             ("Seed", str(p.seed)), ("Size", f"{p.width}x{p.height}")]
    if p.model_hash:
        pairs.append(("Model hash", p.model_hash))
    if p.model:
        pairs.append(("Model", p.model))
    if p.lora_hashes:
        pairs.append(("Lora hashes", ", ".join(f"{n}: {h}" for n, h in p.lora_hashes)))
    pairs += sorted(p.extra.items())
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in pairs))
    return "\n".join(lines)


def parse(text: str) -> Parameters:
    """Read infotext written by us or by A1111/Forge (unknown keys land in `extra`)."""
    lines = text.strip().split("\n")
    last = lines[-1] if len(_PAIR.findall(lines[-1])) >= 3 else ""
    body = lines[:-1] if last else lines
    prompt_lines, negative_lines, in_negative = [], [], False
    for line in body:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative_lines if in_negative else prompt_lines).append(line)
    prompt = "\n".join(prompt_lines).strip()
    loras = tuple((m.group(1), float(m.group(2)))
                  for m in re.finditer(r"<lora:([^:>]+):([-+\d.eE]+)>", prompt))
    values = {k.strip(): _unquote(v.strip()) for k, v in _PAIR.findall(last)}
    width, _, height = values.pop("Size", "512x512").partition("x")
    lora_hashes = tuple(tuple(part.strip().rsplit(":", 1)) for part in
                        values.pop("Lora hashes", "").split(",") if ":" in part)
    return Parameters(
        prompt=prompt, negative_prompt="\n".join(negative_lines).strip(),
        steps=int(values.pop("Steps", 20)), sampler=values.pop("Sampler", "Euler"),
        cfg_scale=float(values.pop("CFG scale", 7)), seed=int(values.pop("Seed", 0)),
        width=int(width), height=int(height), model=values.pop("Model", ""),
        model_hash=values.pop("Model hash", ""), loras=loras,
        lora_hashes=tuple((n.strip(), h.strip()) for n, h in lora_hashes), extra=values)


def strip_lora_tags(prompt: str) -> str:
    """The prompt without <lora:…> tags (strengths are applied as adapters, not as text)."""
    return re.sub(r"\s*<lora:[^>]+>", "", prompt).strip()
