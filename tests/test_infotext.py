"""A1111 infotext: what we write, other tools read, and we read theirs."""

from __future__ import annotations

from studio import infotext
from studio.infotext import Parameters


def test_round_trip_with_loras_and_awkward_text():
    p = Parameters(prompt="zxq, a cat, (masterpiece:1.2)", negative_prompt="blurry, text",
                   steps=25, sampler="DPM++ 2M", cfg_scale=6.5, seed=1234, width=640,
                   height=512, model="pocket-model", loras=(("my-style", 0.8),),
                   lora_hashes=(("my-style", "0123456789ab"),),
                   extra={"Note": 'has, comma: and "quotes"'})
    text = infotext.format(p)
    assert text.splitlines()[0] == "zxq, a cat, (masterpiece:1.2) <lora:my-style:0.8>"
    back = infotext.parse(text)
    assert back.prompt == "zxq, a cat, (masterpiece:1.2) <lora:my-style:0.8>"
    assert infotext.strip_lora_tags(back.prompt) == p.prompt
    assert (back.negative_prompt, back.steps, back.sampler, back.cfg_scale, back.seed) == \
        ("blurry, text", 25, "DPM++ 2M", 6.5, 1234)
    assert (back.width, back.height, back.model) == (640, 512, "pocket-model")
    assert back.loras == (("my-style", 0.8),) and back.lora_hashes == p.lora_hashes
    assert back.extra == p.extra


def test_reads_a1111_output():
    text = ("a castle <lora:ink:0.6>\nNegative prompt: lowres\nSteps: 30, Sampler: Euler a, "
            "Schedule type: Karras, CFG scale: 7, Seed: 42, Size: 512x768, Model hash: "
            "6ce0161689, Model: v1-5-pruned-emaonly, Lora hashes: \"ink: 1a2b3c4d5e6f\", "
            "Version: v1.10.1")
    p = infotext.parse(text)
    assert p.prompt == "a castle <lora:ink:0.6>" and p.negative_prompt == "lowres"
    assert (p.sampler, p.seed, p.width, p.height) == ("Euler a", 42, 512, 768)
    assert p.model_hash == "6ce0161689" and p.loras == (("ink", 0.6),)
    assert p.lora_hashes == (("ink", "1a2b3c4d5e6f"),)
    assert p.extra == {"Schedule type": "Karras", "Version": "v1.10.1"}
