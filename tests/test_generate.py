"""The generation worker (`python -m training serve`) through its JSON-lines protocol: requests
built from the studio/protocol/__init__.py dataclasses, as the Generate tab builds them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, worker_env
from studio import grid, infotext
from studio.protocol import (CancelRequest, GenerateRequest, GridRequest, LoadRequest,
                             MergeRequest, Request)

pytestmark = pytest.mark.slow


class Serve:
    def __init__(self, project: Path):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "training", "serve", "--project", str(project)], cwd=ROOT,
            env=worker_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True)
        assert self.next()["event"] == "hello"

    def send(self, request: Request | dict) -> None:
        """A typed request, or a raw dict (for what the dataclasses would refuse to build)."""
        line = request.to_json() if isinstance(request, Request) else json.dumps(request)
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def next(self) -> dict:
        line = self.proc.stdout.readline()
        assert line, "worker exited"
        return json.loads(line)

    def until(self, name: str) -> list[dict]:
        events = []
        while True:
            events.append(self.next())
            if events[-1]["event"] == name:
                return events
            assert events[-1]["event"] != "error", events[-1]

    def close(self) -> int:
        self.proc.stdin.close()  # the GUI went away: the worker exits by itself
        return self.proc.wait(timeout=60)


@pytest.fixture
def serve(tmp_path, tiny_model):
    worker = Serve(tmp_path)
    worker.send(LoadRequest(base_model=str(tiny_model)))
    assert worker.until("ready")[-1]["base_loads"] == 1
    yield worker
    assert worker.close() == 0


def pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


REQ = dict(prompt="zxq, a red circle", seed=3, steps=4, width=64, height=64, cfg_scale=5.0)


def test_strength_zero_is_the_base_image_and_swaps_never_reload(serve, tiny_model, lora_files,
                                                                tmp_path):
    def one(adapters, tag):
        serve.send(GenerateRequest(**REQ, adapters=adapters, out_dir=str(tmp_path / tag), id=tag))
        events = serve.until("gen_done")
        assert [e["step"] for e in events if e["event"] == "gen_progress"] == [1, 2, 3, 4]
        return events[-1]["paths"][0]

    base = one([], "base")
    zero = one([[str(lora_files[0]), 0.0]], "zero")
    full = one([[str(lora_files[0]), 1.0]], "full")
    half = one([[str(lora_files[0]), 0.5], [str(lora_files[1]), 0.5]], "two")
    back = one([], "back")
    assert np.array_equal(pixels(base), pixels(zero))  # strength 0 = exactly the base model
    assert np.abs(pixels(base) - pixels(full)).max() > 10  # the LoRA visibly acts
    assert not np.array_equal(pixels(full), pixels(half))
    assert np.array_equal(pixels(base), pixels(back))
    serve.send(LoadRequest(base_model=str(tiny_model)))  # same base again: no reload
    assert serve.until("ready")[-1]["base_loads"] == 1

    text = Image.open(full).text["parameters"]
    params = infotext.parse(text)
    assert params.prompt == "zxq, a red circle <lora:tiny-step50:1>"
    assert (params.seed, params.steps, params.width, params.cfg_scale) == (3, 4, 64, 5.0)
    assert params.loras == (("tiny-step50", 1.0),)
    assert len(params.lora_hashes[0][1]) == 12
    assert "lora" not in Image.open(base).text["parameters"]


def test_the_same_seed_twice_never_overwrites_a_file(serve, lora_files, tmp_path):
    """With / without renders one seed twice, often within one second: each image keeps its own
    file (and so its own history entry). Files named like the next minute's images are already
    there, so a name that ignored existing files would overwrite one of them."""
    import time

    out = tmp_path / "generated"
    out.mkdir()
    now = time.time()
    squatters = {}
    for dt in range(60):
        path = out / f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(now + dt))}-3-0.png"
        path.write_bytes(b"an earlier image")
        squatters[path] = path.read_bytes()
    paths = []
    for tag, adapters in (("with", [[str(lora_files[0]), 1.0]]), ("without", [])):
        serve.send(GenerateRequest(**REQ, adapters=adapters, out_dir=str(out), id=tag))
        events = serve.until("gen_done")
        paths += [e["path"] for e in events if e["event"] == "image"]
    assert len(paths) == len(set(paths)) == 2
    assert all(p.read_bytes() == data for p, data in squatters.items())  # none overwritten
    assert "<lora:" in Image.open(paths[0]).text["parameters"]
    assert "<lora:" not in Image.open(paths[1]).text["parameters"]
    assert all(re.search(r"-3-0-\d+\.png$", p) for p in paths)  # beside the earlier ones


def test_cancel_stops_between_steps(serve, tmp_path):
    serve.send(GenerateRequest(**{**REQ, "steps": 150}, count=4, out_dir=str(tmp_path), id="long"))
    first = serve.next()
    assert first["event"] == "gen_progress"
    serve.send(CancelRequest())
    done = serve.until("gen_done")[-1]
    assert done["cancelled"] is True and done["paths"] == []
    serve.send(GenerateRequest(**REQ, out_dir=str(tmp_path), id="after"))  # still serving
    assert serve.until("gen_done")[-1]["cancelled"] is False


def test_bad_commands_get_an_error_naming_the_field_and_the_worker_keeps_serving(serve,
                                                                                  tmp_path):
    def error_for(command: dict) -> dict:
        serve.send(command)
        error = serve.next()
        assert error["event"] == "error", error
        return error

    generate = {"cmd": "generate", **REQ, "out_dir": str(tmp_path)}
    error = error_for({**generate, "sampler": "Nope"})
    assert error["field"] == "sampler" and "one of Euler" in error["message"]
    error = error_for({"cmd": "load"})
    assert (error["field"], error["message"]) == ("base_model", "load: base_model is missing")
    error = error_for({**generate, "width": 0})  # not silently the default size
    assert error["field"] == "width" and "between 32 and 2048, not 0" in error["message"]
    error = error_for({**generate, "steps": "4"})
    assert error["field"] == "steps" and "whole number" in error["message"]
    assert error_for({**generate, "widht": 64})["field"] == "widht"
    pickled = tmp_path / "style.bin"
    pickled.write_bytes(b"\x80\x04junk")
    assert "only .safetensors" in error_for({**generate, "adapters": [[str(pickled), 1.0]]})[
        "message"]
    assert "unknown command" in error_for({"cmd": "teleport"})["message"]
    serve.send(GenerateRequest(**REQ, out_dir=str(tmp_path), sampler="DPM++ 2M"))
    assert serve.until("gen_done")[-1]["paths"]


def test_grid_rows_are_checkpoints_and_columns_strengths(serve, lora_files, tmp_path):
    serve.send(GenerateRequest(**REQ, adapters=[], out_dir=str(tmp_path / "base")))
    base = pixels(serve.until("gen_done")[-1]["paths"][0])
    out = tmp_path / "grid.png"
    serve.send(GridRequest(**REQ, checkpoints=[str(p) for p in lora_files],
                           strengths=[0, 0.5, 1], out=str(out), id="g"))
    events = serve.until("gen_done")
    assert {e["count"] for e in events if e["event"] == "gen_progress"} == {6}
    image = Image.open(out)
    assert "LoRA grid" in image.text["parameters"]
    px = np.asarray(image.convert("RGB"), dtype=np.int16)
    k = grid.cell_scale((64, 64))  # small cells are enlarged, pixel for pixel (nearest)
    base = base.repeat(k, axis=0).repeat(k, axis=1)
    for row in range(2):
        box = grid.cell_box(image.size, (64, 64), 2, 3, row, 0)
        assert np.array_equal(px[box[1]:box[3], box[0]:box[2]], base)  # strength 0 = base
        box = grid.cell_box(image.size, (64, 64), 2, 3, row, 2)
        assert not np.array_equal(px[box[1]:box[3], box[0]:box[2]], base)
    assert image.size[0] > 3 * 64 and image.size[1] > 2 * 64  # room for the labels


def test_one_shot_cli(tiny_model, lora_files, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "training", "generate", "--model", str(tiny_model), "--prompt",
         "a blue square", "--lora", f"{lora_files[1]}:0.75", "--steps", "3", "--size", "64x64",
         "--count", "2", "--out", str(tmp_path)], cwd=ROOT, env=worker_env(),
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    done = [json.loads(line) for line in proc.stdout.splitlines()][-1]
    assert done["event"] == "gen_done" and len(done["paths"]) == 2
    seeds = [infotext.parse(Image.open(p).text["parameters"]).seed for p in done["paths"]]
    assert seeds == [0, 1]


def test_merge_command_bakes_the_lora_in(serve, lora_files, tmp_path):
    out = tmp_path / "merged.safetensors"
    serve.send(MergeRequest(adapters=[(str(lora_files[0]), 0.7)], out=str(out), precision="fp32",
                            id="m"))
    done = serve.until("gen_done")[-1]
    assert done["paths"] == [str(out)] and out.stat().st_size > 1_000_000
    from studio.safetensors_header import read_header
    tensors, meta = read_header(out)
    assert any(k.startswith("model.diffusion_model.") for k in tensors)
    assert meta["modelspec.architecture"] == "stable-diffusion-v1"


def test_the_protocol_names_what_the_worker_can_do():
    """Sampler, merge format and precision names the requests accept are the worker's own."""
    from studio import protocol
    from training import generate, merge

    assert protocol.SAMPLERS == tuple(generate.SAMPLERS)
    assert protocol.MERGE_FORMATS == merge.FORMATS
    assert protocol.MERGE_PRECISIONS == tuple(merge.SAVE_DTYPES)
