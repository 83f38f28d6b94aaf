"""Regenerate CLIP's tokenizer files (vocab.json, merges.txt) into LoRA Studio's cache.

    python scripts/make_clip_bpe.py             # downloads the open-clip-torch wheel (1.5 MB)
    python scripts/make_clip_bpe.py --from open_clip_torch-3.3.0-py3-none-any.whl
    python scripts/make_clip_bpe.py --from bpe_simple_vocab_16e6.txt.gz --out DIR

Single-file checkpoints carry no tokenizer, and transformers 5 silently builds a 2-token one when
the files are missing (lora-formats.md §8.2), so training needs these. The files are generated
from the MIT-licensed BPE table rather than committed (issue 6). Exit status 0 = files ready.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a plain script from anywhere

from training import clip_bpe  # noqa: E402


def check_with_transformers(folder: Path) -> str:
    """The asserts of lora-formats.md §8.3, when transformers is installed ('' = fine)."""
    try:
        from transformers import CLIPTokenizer
    except ImportError:
        return ""
    import json
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(folder / name, Path(tmp) / name)
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "CLIPTokenizer", "model_max_length": 77,
            "bos_token": clip_bpe.BOS, "eos_token": clip_bpe.EOS, "unk_token": clip_bpe.EOS,
            "pad_token": clip_bpe.EOS}))
        tok = CLIPTokenizer.from_pretrained(tmp)
        ids = tok("a cat").input_ids
    if len(tok) != clip_bpe.VOCAB_SIZE or ids != [49406, 320, 2368, 49407]:
        return f"tokenizer check failed: {len(tok)} entries, 'a cat' -> {ids}"
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", type=Path,
                        help="a local open_clip_torch wheel or bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("--out", type=Path, help=f"folder (default {clip_bpe.default_dir()})")
    parser.add_argument("--no-download", action="store_true", help="never go online")
    args = parser.parse_args(argv)
    try:
        folder = clip_bpe.ensure_bpe(args.out, source=args.source,
                                     download=not args.no_download)
    except (clip_bpe.BpeUnavailable, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if hint := getattr(exc, "hint", ""):
            print(f"hint: {hint}", file=sys.stderr)
        return 1
    problem = check_with_transformers(folder)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 1
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
