"""Robust image opening for training and the dataset doctor: fully decoded, oriented, 8-bit sRGB."""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError, features

# Formats we let Pillow try. Restricting `Image.open` keeps exotic plugins away from user files
# (EPS would start Ghostscript; PSD gives a layer or a stale composite; a camera RAW opens as its
# TIFF thumbnail) and turns them into a named "unsupported" instead.
FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "DIB", "GIF", "TIFF", "AVIF")  # JPEG also opens MPO
PLUGIN_FORMATS = ("HEIF", "JXL")  # registered by pi-heif / pillow-jxl-plugin if installed


def _register_heif() -> bool:
    """Let Pillow open HEIC/HEIF (iPhone photos) as format "HEIF". pi-heif is pillow-heif's
    decode-only build from the same authors: its wheels bundle only LGPL libheif/libde265, while
    pillow-heif's also carry the GPLv2 x265 encoder, which we never need (issue 13, item 15)."""
    for module in ("pi_heif", "pillow_heif"):
        try:
            __import__(module).register_heif_opener()
            return True
        except ImportError:
            continue
    return False


HEIF = _register_heif()
_HEIF_EXTENSIONS = (".heic", ".heif")
EXTENSIONS = (".png", ".jpg", ".jpeg", ".jpe", ".webp", ".bmp", ".gif", ".tif", ".tiff",
              ".avif") + (_HEIF_EXTENSIONS if HEIF else ())
UNSUPPORTED_EXTENSIONS = (() if HEIF else _HEIF_EXTENSIONS) + (
    ".jxl", ".svg", ".psd", ".psb", ".xcf", ".kra", ".pdf", ".eps", ".ai", ".cr2", ".cr3", ".nef",
    ".arw", ".dng", ".orf", ".rw2", ".raf")
# Below Pillow's global warning threshold (89.5 MP), set for us only: Image.MAX_IMAGE_PIXELS is
# shared by every library in the process, so we check our own limit after the header is read.
MAX_PIXELS = 64_000_000
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}  # the same table as ImageOps.exif_transpose
HAS_LCMS = features.check("littlecms2")


class ImageProblem(ValueError):
    """An image that cannot be used; `code` is "bomb", "corrupt", "unsupported" or "unreadable"."""

    def __init__(self, path: Path, code: str, message: str):
        self.path, self.code, self.reason = Path(path), code, message
        super().__init__(f"{Path(path).name}: {message}")


class Note(str):
    """A plain-words note about what was done to an image; `code` says which kind (doctor codes)."""

    code: str

    def __new__(cls, code: str, text: str) -> Note:
        note = super().__new__(cls, text)
        note.code = code
        return note


def _unsupported_reason(path: Path, head: bytes) -> str | None:
    """What the file is and what to do, when Pillow can't or shouldn't read it; None if unknown."""
    ext, brand = path.suffix.lower(), head[8:12] if head[4:8] == b"ftyp" else b""
    if not HEIF and (brand[:3] in (b"hei", b"hev", b"mif", b"msf") or ext in _HEIF_EXTENSIONS):
        return ("is a HEIC/HEIF photo (iPhone), which this app cannot read yet: export it as JPEG "
                "or PNG (iPhone: Settings > Camera > Formats > Most Compatible)")
    if brand[:3] == b"avi" and not features.check("avif"):
        return "is AVIF, which this Pillow build cannot read: export it as PNG or JPEG"
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")) or ext == ".jxl":
        return "is JPEG XL, which this app cannot read yet: export it as PNG or JPEG"
    if ext == ".svg" or (b"<svg" in head.lower() and ext not in EXTENSIONS):
        return ("is a vector drawing (SVG): export it as a PNG at least as large as the training "
                "resolution")
    if head.startswith(b"8BPS") or ext in (".psd", ".psb", ".xcf", ".kra"):
        return "is a layered painting file: export the flattened picture as PNG"
    if head.startswith((b"%PDF", b"%!PS", b"\xc5\xd0\xd3\xc6")) or ext in (".pdf", ".eps", ".ai"):
        return "is a PDF/PostScript document: export the picture as PNG"
    if ext in UNSUPPORTED_EXTENSIONS:
        return "is a camera RAW file: develop it and export as JPEG or PNG"
    return None


def _open(path: Path, max_pixels: int) -> Image.Image:
    """Image.open restricted to FORMATS, with decompression bombs refused by our own limit."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(64)
    except OSError as exc:
        raise ImageProblem(path, "unreadable", f"cannot be read ({exc.strerror or exc})") from exc
    reason = _unsupported_reason(path, head)
    # Formats a plugin may add (pillow-heif registers "HEIF") are tried; the rest are refused.
    formats = FORMATS + tuple(f for f in PLUGIN_FORMATS if f in Image.OPEN)
    if reason and path.suffix.lower() in UNSUPPORTED_EXTENSIONS and not (
            set(formats) - set(FORMATS) and path.suffix.lower() in (".heic", ".heif", ".jxl")):
        raise ImageProblem(path, "unsupported", reason)
    try:
        with warnings.catch_warnings():
            # Pillow warns between 1x and 2x its global limit; ours is lower and checked below.
            # (catch_warnings is process-wide while it lasts; it only hides this one warning.)
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path, formats=formats)
    except Image.DecompressionBombError as exc:
        raise ImageProblem(path, "bomb", "claims a gigantic size (a 'decompression bomb'); "
                                         "refused. Downscale it in an image editor") from exc
    except UnidentifiedImageError as exc:
        if reason:
            raise ImageProblem(path, "unsupported", reason) from exc
        if head.startswith(b"\x00\x05\x16\x07"):  # AppleDouble "._name" files from macOS copies
            raise ImageProblem(path, "corrupt", "is a macOS metadata file, not an image: delete "
                                                "it") from exc
        what = "is empty (0 bytes)" if not head else "is not a recognisable image"
        raise ImageProblem(path, "corrupt", f"{what}: re-export or remove it") from exc
    except (PermissionError, FileNotFoundError, IsADirectoryError) as exc:
        raise ImageProblem(path, "unreadable", f"cannot be read ({exc.strerror or exc})") from exc
    except Exception as exc:  # a header broken in a way the plugin did not expect
        raise ImageProblem(path, "corrupt", f"is damaged ({exc}): re-export or remove it") from exc
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise ImageProblem(path, "bomb", f"is {w}x{h} ({w * h / 1e6:.0f} MP), over the "
                                         f"{max_pixels / 1e6:.0f} MP safety limit (it may be a "
                                         f"'decompression bomb'); downscale it first")
    return im


def _orientation(im: Image.Image, cheap: bool = False) -> int:
    if cheap and im.format == "PNG" and "exif" not in im.info:
        # PngImageFile.getexif() decodes the whole image to look for an eXIf chunk after the pixel
        # data; for a header-only size look at XMP only (Pillow reads tiff:Orientation there too).
        match = re.search(r'tiff:Orientation(?:="|>)([0-9])', str(im.info.get("XML:com.adobe.xmp",
                                                                                "")))
        return int(match[1]) if match else 1
    try:
        return int(im.getexif().get(0x0112, 1) or 1)
    except Exception:  # a broken EXIF block must not make the picture unreadable
        return 1


def image_size(path: Path, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(width, height) as displayed, i.e. after EXIF rotation, from the header only."""
    with _open(Path(path), max_pixels) as im:
        w, h = im.size
        return (h, w) if _orientation(im, cheap=True) in (5, 6, 7, 8) else (w, h)


def _to_8bit(im: Image.Image) -> Image.Image:
    """16-bit and 32-bit greyscale to L, scaled: a plain convert clamps (Pillow#2574, #5991),
    turning a 0..65535 ramp almost entirely white (reference §3)."""
    arr = np.asarray(im)
    if im.mode.startswith("I;16") or (im.mode == "I" and arr.min() >= 0 and arr.max() <= 65535):
        out = (arr.astype(np.uint32) * 255 + 32767) // 65535
    elif im.mode == "F" and arr.min() >= 0 and arr.max() <= 1:
        out = np.round(arr * 255)
    else:  # arbitrary range (32-bit int, float HDR): stretch what is there
        lo, hi = float(arr.min()), float(arr.max())
        out = np.round((arr.astype(np.float64) - lo) * (255 / (hi - lo or 1)))
    return Image.fromarray(out.astype(np.uint8))  # 2-D uint8: mode "L"


def _split_alpha(im: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """(colour, alpha or None); palette/grey/RGB images carry transparency in info (tRNS)."""
    if im.mode in ("La", "RGBa"):
        im = im.convert(im.mode.upper())
    if im.mode == "LA":
        return im.getchannel("L"), im.getchannel("A")
    if im.mode.startswith("I;16") and "transparency" in im.info:
        alpha = Image.fromarray(((np.asarray(im) != im.info["transparency"]) * 255)
                                .astype(np.uint8))
        return im, alpha
    if im.mode in ("RGBA", "PA") or ("transparency" in im.info and im.mode in ("P", "L", "RGB",
                                                                                  "1")):
        rgba = im.convert("RGBA")
        return rgba.convert("RGB"), rgba.getchannel("A")
    return im, None


def _to_srgb(im: Image.Image, icc: bytes | None, notes: list[Note]) -> Image.Image:
    """L/RGB/CMYK to sRGB RGB using the embedded ICC profile when there is one (reference §3)."""
    if icc and HAS_LCMS:
        from PIL import ImageCms

        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            name = (ImageCms.getProfileDescription(src) or "unnamed").strip()
            space = src.profile.xcolor_space.strip()
            if space == {"L": "GRAY"}.get(im.mode, im.mode) and "srgb" not in name.lower():
                out = ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"),
                                                outputMode="RGB")
                notes.append(Note("icc_profile", f"had its colours converted from its '{name}' "
                                                 f"profile to sRGB"))
                if im.mode == "CMYK":
                    notes.append(Note("cmyk", "is a CMYK (print) image, converted to RGB with its "
                                              "profile; check the colours"))
                return out
            if space != {"L": "GRAY"}.get(im.mode, im.mode):
                notes.append(Note("icc_profile", f"has a {space} colour profile that does not fit "
                                                 f"its {im.mode} pixels; the profile was ignored"))
        except (ImageCms.PyCMSError, OSError, ValueError) as exc:
            notes.append(Note("icc_profile", f"has a colour profile that could not be used "
                                             f"({exc}); colours may be slightly off"))
    elif icc:
        notes.append(Note("icc_profile", "has a colour profile, but this Pillow build has no "
                                         "LittleCMS: colours were not converted"))
    if im.mode == "CMYK":
        notes.append(Note("cmyk", "is a CMYK (print) image without a colour profile, converted "
                                  "with a simple formula; colours may be off: export it as RGB"))
    if im.mode == "LAB" and HAS_LCMS:
        from PIL import ImageCms

        tf = ImageCms.buildTransform(ImageCms.createProfile("LAB"),
                                     ImageCms.createProfile("sRGB"), "LAB", "RGB")
        return ImageCms.applyTransform(im, tf)
    return im.convert("RGB")


def open_rgb(path: Path, background: tuple[int, int, int] = (255, 255, 255),
             max_pixels: int = MAX_PIXELS) -> tuple[Image.Image, list[Note]]:
    """The picture as trained: fully decoded, frame 0, EXIF-oriented, transparency composited on
    `background`, 8-bit sRGB "RGB". Notes (str with a `.code`) say what was converted. Raises
    ImageProblem (a ValueError naming the file) for bombs, corrupt, unreadable and unsupported
    files.
    """
    path, notes = Path(path), []
    im = _open(path, max_pixels)
    try:
        with im:
            try:
                # MPO (phone JPEGs) holds depth maps or previews as extra frames, not animation.
                if getattr(im, "is_animated", False) and im.format != "MPO":
                    frames = getattr(im, "n_frames", 2)
                    kind = "pages" if im.format == "TIFF" else "frames"
                    notes.append(Note("animated", f"has {frames} {kind}; only the first is used"))
                    im.seek(0)
                im.load()
            except Image.DecompressionBombError as exc:
                raise ImageProblem(path, "bomb", f"refused as a decompression bomb "
                                                 f"({exc})") from exc
            orientation = _orientation(im)
            icc = im.info.get("icc_profile")
            colour, alpha = _split_alpha(im)
            if colour.mode.startswith("I") or colour.mode == "F":
                bits = "16" if ";16" in colour.mode else "32"
                notes.append(Note("sixteen_bit", f"has {bits}-bit greyscale pixels "
                                                 f"({colour.mode}), scaled to 8-bit"))
                colour = _to_8bit(colour)
            elif colour.mode in ("P", "1"):
                colour = colour.convert("RGB" if colour.mode == "P" else "L")
            rgb = _to_srgb(colour, icc, notes)
    except ImageProblem:
        raise
    except MemoryError as exc:
        raise ImageProblem(path, "bomb", "is too large to decode with the memory "
                                         "available") from exc
    except Exception as exc:  # bad data raises OSError, SyntaxError, EOFError, struct.error, ...
        what = "is truncated" if "truncated" in str(exc).lower() else "is damaged"
        raise ImageProblem(path, "corrupt", f"{what} and cannot be decoded ({exc}); re-export or "
                                            f"remove it") from exc
    if alpha is not None and alpha.getextrema()[0] < 255:
        rgb = Image.composite(rgb, Image.new("RGB", rgb.size, tuple(background)), alpha)
        notes.append(Note("transparency", f"has transparent areas, filled with the background "
                                          f"colour {tuple(background)}"))
    if orientation in _TRANSPOSE:
        rgb = rgb.transpose(_TRANSPOSE[orientation])
        notes.append(Note("exif_rotated", f"is stored sideways or flipped (EXIF orientation "
                                          f"{orientation}); turned upright"))
    return rgb, notes


def pixel_hash(im: Image.Image) -> str:
    """SHA-256 of decoded pixels and size: the same picture saved twice (other bytes) matches."""
    return hashlib.sha256(f"{im.mode}{im.size}".encode() + im.tobytes()).hexdigest()


_DCT = np.cos(np.pi * np.outer(np.arange(32), 2 * np.arange(32) + 1) / 64)


def perceptual_hash(im: Image.Image) -> int:
    """64-bit pHash: the signs (vs the median) of the 8x8 lowest DCT frequencies of a 32x32 grey
    thumbnail. Resizing and JPEG re-encoding barely move it; different pictures differ in ~half
    the bits (reference §3: pHash + Hamming threshold)."""
    grey = np.asarray(im.convert("L").resize((32, 32), Image.Resampling.LANCZOS, reducing_gap=3.0),
                      np.float64)  # reducing_gap: box-reduce first, 10x faster on photos
    low = (_DCT @ grey @ _DCT.T)[:8, :8].ravel()
    bits = low > np.median(low[1:])  # the DC term (overall brightness) would skew the median
    return int("".join("1" if b else "0" for b in bits), 2)


def colour_thumb(im: Image.Image) -> np.ndarray:
    """An 8x8 RGB thumbnail: pHash ignores colour, so near duplicates must also agree here."""
    return np.asarray(im.resize((8, 8), Image.Resampling.BOX), np.int16)
