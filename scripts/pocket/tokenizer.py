"""Build a tiny CLIP BPE tokenizer offline (no download of openai/clip-vit-large-patch14's 49k vocab).

Format = real CLIP's vocab.json + merges.txt: the 256-char byte alphabet (CLIP/GPT-2 byte table, training.clip_bpe.bytes_to_unicode), the same
chars with '</w>' (end of word), then merges so that every known word becomes ONE token, then
<|startoftext|> and <|endoftext|>. Unknown words still tokenize: they fall back to per-byte tokens.

Why one token per word: the tiny text encoder learns far faster when 'red' is a single embedding than when it
must assemble it from 'r', 'e', 'd</w>'.

transformers 5 pitfall: CLIPTokenizer(vocab_file=..., merges_file=...) silently ignores the files (2-token vocab).
We write the files ourselves and load them with CLIPTokenizer.from_pretrained(folder).
"""

from __future__ import annotations

import json
from pathlib import Path

from scripts.pocket import shapes
from training.clip_bpe import bytes_to_unicode

TRIGGER = "zxqstyle"  # demo style trigger word; nonsense so it collides with nothing the base model knows

# Words users are likely to type, beyond the caption words, so they are single tokens too.
EXTRA_WORDS = """
a an the on in at of with and or to is one two big tiny huge little medium middle centre center
left right top bottom upper lower corner side background foreground shape shapes object picture image photo
drawing painting illustration art style simple flat plain solid bright dark light pale color colour colored
coloured grey gray outline outlined thick thin border dots dotted dot halftone stripes striped pattern texture
rectangle oval ring heart moon hexagon ball box plus sign line lines
magenta violet navy teal gold silver beige tan lime maroon
""".split() + [TRIGGER]




def bpe(word, ranks):
    """Reference CLIP BPE of one lowercase word -> list of tokens (used to plan merges, then cross-checked)."""
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = [(ranks.get((a, b), 1e18), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        rank, i = min(pairs)
        if rank == 1e18:
            break
        a, b = parts[i], parts[i + 1]
        merged, j = [], 0
        while j < len(parts):  # merge every occurrence of the pair, like CLIP does
            if j < len(parts) - 1 and parts[j] == a and parts[j + 1] == b:
                merged.append(a + b)
                j += 2
            else:
                merged.append(parts[j])
                j += 1
        parts = merged
    return parts


def all_words():
    words = set(shapes.COLOURS) | set(shapes.SHAPES) | set(EXTRA_WORDS)
    for phrase, _, _ in shapes.POSITIONS:
        words.update(phrase.split())
    words.update(["small", "large", "centre"])
    return sorted(w for w in words if w.isascii())


def build_files():
    """Return (vocab dict, merges list).

    Merges are added word by word. Before a word gets its chain we run the merges planned so far on it; new
    merges only join the pieces those produce. Because new merges rank after all earlier ones, they never change
    how earlier words tokenize, so every word ends as one token.
    """
    alphabet = list(bytes_to_unicode().values())
    vocab_list = alphabet + [c + "</w>" for c in alphabet]
    merges, ranks = [], {}
    for word in all_words():
        parts = bpe(word, ranks)
        while len(parts) > 1:
            pair = (parts[0], parts[1])
            if pair not in ranks:
                ranks[pair] = len(merges)
                merges.append(pair)
                vocab_list.append(pair[0] + pair[1])
            parts = [parts[0] + parts[1]] + parts[2:]
        assert bpe(word, ranks) == [word + "</w>"], word
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    seen, vocab = set(), {}
    for tok in vocab_list:
        if tok not in seen:
            seen.add(tok)
            vocab[tok] = len(vocab)
    return vocab, merges


def save(folder):
    """Write vocab.json, merges.txt and tokenizer_config.json, load the folder back, verify, keep all files."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_files()
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    # Same special tokens as SD1.5's tokenizer: pad with <|endoftext|>, 77 positions.
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": "<|startoftext|>",
              "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
              "do_lower_case": True, "clean_up_tokenization_spaces": False}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}, indent=2))
    tok = CLIPTokenizer.from_pretrained(str(folder), model_max_length=77)
    check(tok, vocab)
    tok.save_pretrained(str(folder))  # adds tokenizer.json (fast load); vocab.json/merges.txt stay
    assert (folder / "vocab.json").exists() and (folder / "merges.txt").exists()
    check(CLIPTokenizer.from_pretrained(str(folder)), vocab)
    return tok


def check(tok, vocab):
    assert len(tok) == len(vocab), (len(tok), len(vocab))
    for word in all_words():
        ids = tok(word, add_special_tokens=False).input_ids
        assert ids == [vocab[word + "</w>"]], (word, tok.convert_ids_to_tokens(ids))
    ids = tok(f"{TRIGGER}, a small red circle at the top left on a blue background").input_ids
    assert len(ids) == 2 + 14 and ids[0] == vocab["<|startoftext|>"] and ids[-1] == vocab["<|endoftext|>"], ids
    unk = tok("a qwfp glorb", add_special_tokens=False).input_ids  # unknown words -> byte tokens, never an error
    assert len(unk) > 3 and vocab["<|endoftext|>"] not in unk, unk
    assert tok("red", padding="max_length", max_length=77).input_ids[-1] == vocab["<|endoftext|>"]


if __name__ == "__main__":
    import sys

    t = save(sys.argv[1] if len(sys.argv) > 1 else "/tmp/pocket/tokenizer")
    print(len(t), t.convert_ids_to_tokens(t(f"{TRIGGER}, a small red circle in the centre on a grey bg").input_ids))
