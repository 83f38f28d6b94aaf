"""Dataset doctor and robust image opening on a corpus of bad inputs generated here (issue 8)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from studio import paths
from studio.dataset import captions, images, scanner
from studio.dataset.report import SEVERITY

RES = 64  # training resolution for the corpus: keeps every image small and the test fast


def picture(seed: int, size=(128, 128)) -> Image.Image:
    """A smooth random colour field: photo-like low frequencies, different for every seed."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), "RGB")
    return small.resize(size, Image.Resampling.BICUBIC)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height but holds no pixels: a bomb that costs nothing to build."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0,
                                                               0)) +
            chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def swapped_rgb_profile() -> bytes:
    """An ICC v2 matrix/TRC RGB profile whose red and green primaries are swapped: a colour
    conversion is then unmistakable (ImageCms can only create sRGB/LAB/XYZ itself)."""
    def s15(*v): return b"".join(struct.pack(">i", round(x * 65536)) for x in v)
    def xyz(*v): return b"XYZ \0\0\0\0" + s15(*v)
    name = b"Swapped test RGB\0"
    desc = (b"desc\0\0\0\0" + struct.pack(">I", len(name)) + name + b"\0" * 4 + b"\0" * 4 +
            b"\0\0\0" + b"\0" * 67)
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, 0x0233) + b"\0\0"  # gamma 2.2
    tags = [(b"desc", desc), (b"wtpt", xyz(0.9642, 1.0, 0.8249)),
            (b"rXYZ", xyz(0.3851, 0.7169, 0.0971)),  # sRGB's green colorant (D50)
            (b"gXYZ", xyz(0.4361, 0.2225, 0.0139)),  # sRGB's red colorant
            (b"bXYZ", xyz(0.1431, 0.0606, 0.7141)), (b"rTRC", curve), (b"gTRC", curve),
            (b"bTRC", curve), (b"cprt", b"text\0\0\0\0none\0\0\0\0")]
    offset, table, data = 128 + 4 + 12 * len(tags), b"", b""
    for sig, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) +
              b"mntrRGB XYZ " + b"\0" * 12 + b"acsp" + b"\0" * 28 + s15(0.9642, 1.0, 0.8249) +
              b"\0" * 48)
    return header + struct.pack(">I", len(tags)) + table + data


def folder_state(folder: Path) -> dict[str, tuple]:
    """Every entry's bytes hash (links: their target text), mode and mtime."""
    state = {}
    for p in sorted(folder.iterdir()):
        st = os.lstat(p)
        content = os.readlink(p).encode() if p.is_symlink() else \
            p.read_bytes() if p.is_file() else b"not a file"  # never open the FIFO
        state[p.name] = (hashlib.sha256(content).hexdigest(), st.st_mode, st.st_mtime_ns)
    return state


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("dataset")
    seeds = iter(range(100, 200))

    def save(name: str, im: Image.Image | None = None, caption: str | bytes | None = "a picture",
             **kw) -> Path:
        im = im if im is not None else picture(next(seeds))
        im.save(d / name, **kw)
        if caption is not None:
            cap = d / (Path(name).stem + ".txt")
            cap.write_bytes(caption if isinstance(caption, bytes) else caption.encode())
        return d / name

    save("good.png")
    shutil.copy(d / "good.png", d / "good_copy.png")
    (d / "good_copy.txt").write_text("a copy")
    with Image.open(d / "good.png") as good:  # resized + re-encoded: a near duplicate
        near = good.resize((96, 96), Image.Resampling.LANCZOS)
    save("near.jpg", near, quality=70)
    save("different.png")
    stored = Image.new("RGB", (128, 64), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 64, 64))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6
    save("rotated.jpg", stored, exif=exif.tobytes(), quality=95)
    rgba = Image.new("RGBA", (128, 128), (0, 200, 0, 255))
    rgba.paste((12, 34, 56, 0), (0, 0, 64, 128))  # left half: hidden colour, fully transparent
    save("alpha.png", rgba)
    pal = Image.new("P", (128, 128), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.paste(0, (0, 0, 64, 128))
    save("palette.png", pal, transparency=0)
    save("gray16.png", Image.fromarray(np.full((128, 128), 32768, np.uint16)))
    save("cmyk.jpg", Image.new("CMYK", (128, 128), (0, 255, 0, 0)), quality=95)  # magenta
    save("icc.png", Image.new("RGB", (128, 128), (200, 30, 30)), icc_profile=swapped_rgb_profile())
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    save("srgb.png", picture(7), icc_profile=srgb)
    (d / "bomb.png").write_bytes(png_header_only(100_000, 100_000))  # over Pillow's own limit
    (d / "big.png").write_bytes(png_header_only(9_000, 9_000))  # 81 MP: over ours only
    data = io.BytesIO()
    picture(8).save(data, "JPEG")
    (d / "truncated.jpg").write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    data = io.BytesIO()
    Image.effect_noise((128, 128), 60).save(data, "PNG")  # noise: IDAT spans the cut
    (d / "truncated.png").write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    frames = [Image.new("RGB", (128, 128), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    save("anim.gif", frames[0], save_all=True, append_images=frames[1:], duration=100)
    (d / "photo.heic").write_bytes(b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + os.urandom(200))
    # A real HEIC (96x72, written by pillow-heif 1.8.1): iPhone photos train (issue 13).
    shutil.copy(Path(__file__).parent / "data" / "iphone.heic", d / "iphone.heic")
    (d / "iphone.txt").write_text("a phone photo")
    (d / "layers.psd").write_bytes(b"8BPS\0\x01" + bytes(200))  # beside the exports: harmless
    os.mkfifo(d / "pipe.png")  # opening it would block forever: never opened
    save("tiny.png", picture(9, (32, 32)))
    save("cafe.png", caption="caf\xe9 cr\xe8me, \u201cquoted\u201d".encode("cp1252"))
    save("empty.png", caption=" \r\n")
    save("nocap.png", caption=None)
    save("long.png", caption=", ".join(f"tag{i} word" for i in range(60)))
    save("pair.png")
    save("pair.jpg", caption=None)
    save("Case.png", caption=None)
    save("case.png")
    save("CON.png")
    save("a?.png")
    (d / "orphan.txt").write_text("no image")
    outside = tmp_path_factory.mktemp("elsewhere") / "secret.png"
    picture(10).save(outside)
    (d / "outside.png").symlink_to(outside)
    (outside.parent / "secret.txt").write_text("private")
    save("linkcap.png", caption=None)
    (d / "linkcap.txt").symlink_to(outside.parent / "secret.txt")
    (d / "inside.png").symlink_to(d / "different.png")
    return d


@pytest.fixture(scope="module")
def checked(corpus):
    before = folder_state(corpus)
    report = scanner.scan(corpus, resolution=RES)
    assert folder_state(corpus) == before, "checking must never change the dataset folder"
    return report


EXPECTED = [  # file, code, severity
    ("rotated.jpg", "exif_rotated", "info"), ("alpha.png", "transparency", "warning"),
    ("palette.png", "transparency", "warning"), ("gray16.png", "sixteen_bit", "info"),
    ("cmyk.jpg", "cmyk", "warning"), ("icc.png", "icc_profile", "info"),
    ("bomb.png", "bomb", "error"), ("big.png", "bomb", "error"),
    ("truncated.jpg", "corrupt", "error"), ("truncated.png", "corrupt", "error"),
    ("anim.gif", "animated", "warning"), ("photo.heic", "corrupt", "error"),
    ("layers.psd", "unsupported", "warning"), ("pipe.png", "not_a_file", "warning"),
    ("tiny.png", "too_small", "warning"), ("good_copy.png", "duplicate", "warning"),
    ("near.jpg", "near_duplicate", "warning"), ("cafe.png", "caption_not_utf8", "warning"),
    ("empty.png", "caption_empty", "warning"), ("nocap.png", "caption_missing", "warning"),
    ("long.png", "caption_too_long", "warning"), ("pair.png", "caption_shared", "warning"),
    ("case.png", "case_collision", "warning"), ("outside.png", "symlink_outside", "error"),
    ("linkcap.txt", "symlink_outside", "error"),
    ("CON.png", "unsafe_name", "warning"), ("a?.png", "unsafe_name", "warning"),
    ("orphan.txt", "caption_orphan", "info"),
]


@pytest.mark.parametrize("name,code,severity", EXPECTED)
def test_each_problem_is_reported(checked, corpus, name, code, severity):
    found = [f for f in checked.for_path(corpus / name) if f.code == code]
    assert found, f"{name}: expected {code}, got {checked.codes(corpus / name)}"
    assert found[0].severity == severity
    assert name in found[0].message  # plain words naming the file


def test_pairs_clean_files_and_report_formats(checked, corpus):
    pair = lambda name, code: next(f.other.name for f in checked.for_path(corpus / name)  # noqa
                                   if f.code == code)
    assert pair("good_copy.png", "duplicate") == "good.png"
    assert pair("near.jpg", "near_duplicate") == "good.png"
    assert pair("pair.png", "caption_shared") == "pair.jpg"
    for clean in ("good.png", "different.png", "srgb.png"):
        assert checked.for_path(corpus / clean) == [], checked.for_path(corpus / clean)
    assert pair("inside.png", "duplicate") == "different.png"  # a link inside is followed
    assert "symlink_outside" not in checked.codes(corpus / "inside.png")
    assert "caf\xe9 cr\xe8me" in next(f.detail["decoded"] for f in checked.findings
                                      if f.code == "caption_not_utf8")
    missing = next(f for f in checked.for_path(corpus / "Case.png") if f.code == "caption_missing")
    assert "case.txt" in missing.message  # the near-miss caption is pointed out
    assert all(f.code in SEVERITY for f in checked.findings)
    assert checked.sizes[corpus / "rotated.jpg"] == (64, 128)
    assert corpus / "outside.png" not in checked.sizes  # never followed
    usable = {p.name for p in checked.usable()}
    assert "good.png" in usable and not usable & {"bomb.png", "truncated.jpg", "photo.heic",
                                                  "layers.psd"}
    assert "iphone.heic" in usable and corpus / "pipe.png" not in checked.images
    assert "(it is not used)" in checked.for_path(corpus / "layers.psd")[0].message
    data = json.loads(json.dumps(checked.to_json()))
    assert data["counts"]["error"] == len(checked.errors) == 7
    text = checked.to_text()
    assert text.index("Errors") < text.index("Warnings") < text.index("Notes")
    assert "[bomb] bomb.png" in text


def test_decoded_pixels(corpus):
    im, notes = images.open_rgb(corpus / "rotated.jpg")
    assert im.size == (64, 128) and [n.code for n in notes] == ["exif_rotated"]
    top, bottom = im.getpixel((32, 10)), im.getpixel((32, 118))
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]  # stored left (red) is now on top
    assert images.image_size(corpus / "rotated.jpg") == (64, 128)
    im, _ = images.open_rgb(corpus / "alpha.png")
    assert im.getpixel((10, 10)) == (255, 255, 255) and im.getpixel((100, 10)) == (0, 200, 0)
    im, _ = images.open_rgb(corpus / "alpha.png", background=(0, 0, 0))
    assert im.getpixel((10, 10)) == (0, 0, 0)
    im, _ = images.open_rgb(corpus / "palette.png")
    assert im.getpixel((10, 10)) == (255, 255, 255) and im.getpixel((100, 10)) == (255, 0, 0)
    im, _ = images.open_rgb(corpus / "gray16.png")
    assert im.mode == "RGB" and all(abs(v - 128) <= 1 for v in im.getpixel((5, 5)))
    r, g, b = images.open_rgb(corpus / "cmyk.jpg")[0].getpixel((5, 5))
    assert r > 220 and g < 40 and b > 220
    r, g, b = images.open_rgb(corpus / "icc.png")[0].getpixel((5, 5))
    assert g > 150 and r < 90, "the embedded profile's swapped primaries were not applied"
    srgb_im, notes = images.open_rgb(corpus / "srgb.png")
    assert notes == [] and srgb_im.tobytes() == picture(7).tobytes()  # sRGB is left alone
    im, notes = images.open_rgb(corpus / "iphone.heic")
    assert im.size == (96, 72) and notes == [] and im.getpixel((50, 35))[2] < 60  # yellow box
    assert im.getpixel((2, 2))[2] > 60 and im.getpixel((93, 2))[0] > 200  # the gradient
    im, notes = images.open_rgb(corpus / "anim.gif")
    assert im.getpixel((5, 5)) == (255, 0, 0) and "3 frames" in notes[0]


def test_sixteen_bit_ramp_keeps_its_levels(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (4, 1))
    for mode, arr in (("I;16", ramp), ("I", ramp.astype(np.int32))):
        im = Image.fromarray(arr)
        assert im.mode == mode
        im.save(tmp_path / f"ramp{mode[-2:]}.tif")
        out = np.asarray(images.open_rgb(tmp_path / f"ramp{mode[-2:]}.tif")[0])[0, :, 0]
        assert len(np.unique(out)) > 250 and out[0] == 0 and out[-1] == 255  # not clipped white


@pytest.mark.parametrize("name,code", [("bomb.png", "bomb"), ("big.png", "bomb"),
                                       ("truncated.jpg", "corrupt"), ("photo.heic", "corrupt"),
                                       ("layers.psd", "unsupported")])
def test_problems_raise_a_named_value_error(corpus, name, code):
    with pytest.raises(ValueError, match=name.replace(".", r"\.")) as info:
        images.open_rgb(corpus / name)
    assert isinstance(info.value, images.ImageProblem) and info.value.code == code
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # our limit is local, not Pillow's global
    if code == "bomb":
        with pytest.raises(images.ImageProblem):
            images.image_size(corpus / name)


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's TIFF reader warns about bad tags
def test_damaged_files_never_escape_as_other_exceptions(tmp_path):
    """Truncations and byte flips of each format: a picture or an ImageProblem, nothing else."""
    rng = np.random.default_rng(0)
    for fmt in ("PNG", "JPEG", "GIF", "WEBP", "TIFF", "BMP"):
        data = io.BytesIO()
        picture(3, (40, 32)).save(data, fmt)
        data = data.getvalue()
        variants = [data[:n] for n in range(0, len(data), max(1, len(data) // 15))]
        for _ in range(15):
            flipped = bytearray(data)
            for pos in rng.integers(0, len(data), 4):
                flipped[int(pos)] = int(rng.integers(0, 256))
            variants.append(bytes(flipped))
        for i, variant in enumerate(variants):
            path = tmp_path / f"v{i}.{fmt.lower()}"
            path.write_bytes(variant)
            for fn in (images.open_rgb, images.image_size):
                try:
                    fn(path)
                except images.ImageProblem:
                    pass


def test_near_duplicate_threshold_separates_copies_from_other_pictures():
    def dist(a, b):
        return bin(images.perceptual_hash(a) ^ images.perceptual_hash(b)).count("1")

    for seed in range(6):
        im = picture(seed, (256, 192))
        data = io.BytesIO()
        im.resize((160, 120), Image.Resampling.BILINEAR).save(data, "JPEG", quality=70)
        copy = Image.open(data).convert("RGB")
        assert dist(im, copy) <= 4 < scanner.NEAR_BITS
        assert dist(im, picture(seed + 50, (256, 192))) > scanner.NEAR_BITS + 4


def test_safe_join_refuses_traversal(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "escape").symlink_to(tmp_path)
    assert paths.safe_join(root, "sub/a.png") == (root / "sub" / "a.png").resolve()
    for bad in ("../x.png", "sub/../../x", "/etc/passwd", "C:\\x.png", "\\\\server\\share\\x",
                "sub\\..\\..\\x", "escape/x.png", "", "a\0b"):
        with pytest.raises(paths.UnsafePath):
            paths.safe_join(root, bad)


def test_unsafe_names_and_token_estimate():
    for bad in ("CON.png", "com1.txt", "lpt9", "nul.tar.gz", "a?.png", 'a"b', "x:y", "dot.",
                "space ", "line\nbreak.png", "tab\t.png", "a" * 300):
        assert paths.name_problem(bad), bad
    for ok in ("console.png", "my photo (1).png", "café.png", "COM0.png", ".hidden"):
        assert paths.name_problem(ok) is None, ok
    assert 4 <= captions.estimate_tokens("a photo of a cat") <= 6
    assert captions.estimate_tokens("1girl, solo, long hair") >= 7  # digits and commas count
    assert captions.decode("caf\xe9".encode("cp1252")) == ("caf\xe9", "cp1252")
    assert captions.decode("\ufeffok".encode()) == ("ok", "utf-8-sig")


def test_missing_and_empty_folders(tmp_path):
    assert [f.code for f in scanner.scan(tmp_path / "nope").findings] == ["no_images"]
    assert [f.code for f in scanner.scan(tmp_path).findings] == ["no_images"]
    picture(1).save(tmp_path / "x.png")
    report = scanner.scan(tmp_path, exclude=("x.png",))
    # An excluded image is listed (the GUI shows it) but never opened, and nothing is left.
    assert report.images == [tmp_path / "x.png"] and report.items == {}
    assert [f.code for f in report.blocking()] == ["no_images"]


def test_the_demo_set_has_no_near_copies_but_a_real_copy_of_one_is_found(tmp_path):
    """assets/demo-style: one shape on a dotted background per image, so pHash (blind to the small
    shape) alone called 5 different pictures near copies (issue 14)."""
    demo = Path(__file__).resolve().parents[1] / "assets" / "demo-style"
    report = scanner.scan(demo)
    assert [f.message for f in report.findings if f.code == "near_duplicate"] == []
    folder = tmp_path / "set"
    shutil.copytree(demo, folder)
    with Image.open(folder / "style_22.png") as im:  # shrunk and re-saved as a JPEG
        im.convert("RGB").resize((38, 38), Image.Resampling.BILINEAR).save(
            folder / "style_22_copy.jpg", quality=70)
    with Image.open(folder / "style_14.png") as im:  # enlarged, a border cropped
        im.convert("RGB").resize((512, 512), Image.Resampling.LANCZOS).crop(
            (10, 10, 502, 502)).save(folder / "style_14_big.png")
    near = {f.path.name: f.other.name for f in scanner.scan(folder).findings
            if f.code == "near_duplicate"}
    assert near == {"style_22_copy.jpg": "style_22.png", "style_14_big.png": "style_14.png"}


def test_messages_follow_the_settings(tmp_path):
    """The doctor says what training will really do: a small image is upscaled only when
    upscale_small_images is on, and a caption-less image is not said to carry a trigger word
    that may not be set (issue 14)."""
    from PIL import Image

    from studio.dataset import summary

    Image.new("RGB", (64, 64), (200, 40, 40)).save(tmp_path / "small.png")
    kept = summary.examine(tmp_path, resolution=512, upscale=False)
    small = next(f for f in kept.findings if f.code == "too_small")
    assert "its own smaller size" in small.message and "upscaled" not in small.message
    summary.update_resolution(kept, 512, upscale=True)
    small = next(f for f in kept.findings if f.code == "too_small")
    assert "upscaled and looks soft" in small.message
    missing = next(f for f in kept.findings if f.code == "caption_missing")
    assert "trigger word only" not in missing.message and "if one is set" in missing.message
