"""``fcn-scratch predict`` on several images, its masks, and hostile images: decompression
bombs and images too large for the memory budget (refused before anything big is made)."""

import json
import os
import re
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from fcn_scratch import Tensor, load_model
from fcn_scratch.cli import main
from fcn_scratch.data.images import read_image, read_mask
from fcn_scratch.models import build_model
from fcn_scratch.models.memory import GIB, forward_bytes
from fcn_scratch.train import TrainConfig, Trainer
from fcn_scratch.train.evaluation import inference, predict

SMALL = {"widths": (4, 4, 4, 4, 4), "convs_per_stage": (1, 1, 1, 1, 1), "fc_width": 8}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    config = TrainConfig(epochs=1, train_size=8, val_size=4, batch_size=4, out=str(out), **SMALL)
    Trainer(config, progress=False).fit()
    return str(out / "checkpoint.npz")


def save_rgb(path, h, w, seed=0):
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)


def png_header_only(path, width, height):
    """A PNG that claims width x height grey pixels but holds almost no data (a few hundred
    bytes): readers that trust the header allocate the full image."""

    def chunk(kind, data):
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr))
        f.write(chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_several_images_and_a_folder_give_palette_masks_of_class_ids(checkpoint, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    save_rgb(folder / "p1.png", 37, 53, 1)
    save_rgb(folder / "p2.jpg", 50, 33, 2)
    save_rgb(tmp_path / "single.png", 41, 41, 3)
    out = tmp_path / "out"
    assert (
        main(
            [
                "predict",
                checkpoint,
                str(folder),
                str(tmp_path / "single.png"),
                "-o",
                str(out),
                "--mask",
            ]
        )
        == 0
    )
    model = load_model(checkpoint)
    for stem, source in (
        ("p1", folder / "p1.png"),
        ("p2", folder / "p2.jpg"),
        ("single", tmp_path / "single.png"),
    ):
        image = read_image(str(source))
        with Image.open(out / f"{stem}.png") as im:
            assert im.mode == "P" and im.size == (image.shape[2], image.shape[1])
        np.testing.assert_array_equal(
            read_mask(str(out / f"{stem}.png")), predict(model, image[None])[0]
        )
        assert (out / f"{stem}_overlay.png").is_file()
    assert capsys.readouterr().out.count("wrote") == 3


def test_single_image_form_writes_overlay_and_mask(checkpoint, tmp_path):
    save_rgb(tmp_path / "in.jpg", 29, 44)
    overlay, mask = tmp_path / "o.jpg", tmp_path / "m.png"
    assert (
        main(
            [
                "predict",
                checkpoint,
                str(tmp_path / "in.jpg"),
                "-o",
                str(overlay),
                "--mask",
                str(mask),
            ]
        )
        == 0
    )
    with Image.open(overlay) as im, Image.open(mask) as m:
        assert im.size == m.size == (44, 29) and m.mode == "P"


@pytest.mark.parametrize(
    "output, mask, message",
    [
        ("out.xyz", None, r"-o .*out.xyz: unknown image extension '.xyz'"),
        ("FOLDER", None, r"-o .*: is a folder; expected an image file name"),
        ("o.png", "m.jpg", r"--mask .*m.jpg: a mask must be a .png file"),
    ],
)
def test_bad_output_paths_are_clean_cli_errors(checkpoint, tmp_path, capsys, output, mask, message):
    save_rgb(tmp_path / "in.png", 20, 20)
    (tmp_path / "FOLDER").mkdir()
    argv = ["predict", checkpoint, str(tmp_path / "in.png"), "-o", str(tmp_path / output)]
    assert main(argv + (["--mask", str(tmp_path / mask)] if mask else [])) == 2
    err = capsys.readouterr().err
    assert err.startswith("fcn-scratch predict: error: ")
    assert re.search(message, err), err


def run_predict_subprocess(tmp_path, checkpoint, image, *options):
    """predict in a child process limited to 6 GiB of address space, so that a regression
    (decoding a bomb) fails the test instead of exhausting the machine."""
    code = (
        "import resource, sys\n"
        "from fcn_scratch.cli import main\n"
        "resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    argv = [sys.executable, "-c", code, "predict", checkpoint, image, "-o", str(tmp_path / "o.png")]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run(
        argv + list(options), capture_output=True, text=True, cwd=root, timeout=120
    )


def test_a_decompression_bomb_is_refused_before_decoding(checkpoint, tmp_path):
    png_header_only(tmp_path / "bomb.png", 30000, 30000)  # 900 M pixels in ~100 bytes
    assert os.path.getsize(tmp_path / "bomb.png") < 1000
    done = run_predict_subprocess(tmp_path, checkpoint, str(tmp_path / "bomb.png"))
    assert done.returncode == 2, done.stderr
    assert "fcn-scratch predict: error: image" in done.stderr
    assert "too many pixels" in done.stderr and "Traceback" not in done.stderr


def test_an_image_over_the_memory_budget_is_refused_naming_size_and_budget(checkpoint, tmp_path):
    png_header_only(tmp_path / "big.png", 9000, 8000)  # under Pillow's limit, 72 M pixels
    done = run_predict_subprocess(
        tmp_path, checkpoint, str(tmp_path / "big.png"), "--max-memory", "2"
    )
    assert done.returncode == 2, done.stderr
    assert "is 8000x9000 (HxW)" in done.stderr
    assert "more than the memory budget of 2 GiB (--max-memory)" in done.stderr


def test_inference_records_no_graph():
    model = build_model("fcn8s", 3, rng=0, **SMALL)
    with inference(model):
        y = model(Tensor(np.zeros((1, 3, 40, 40), np.float32)))
    assert not y.requires_grad and y._parents == () and y._backward_fn is None
    assert all(p.requires_grad for p in model.parameters() if p is not model.upscore8.weight)


PROBE = """
import sys, json, numpy as np
from fcn_scratch.models import build_model
from fcn_scratch.train.evaluation import predict

def high_water():  # this process's peak resident memory (per address space, unlike ru_maxrss)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))

model = build_model(sys.argv[1], 21, rng=0, **json.loads(sys.argv[2]))
for size in [(40, 40), (41, 43), (57, 38)]:  # compile every kernel path before measuring
    predict(model, np.zeros((1, 3, *size), np.float32))
before = high_water()
predict(model, np.random.default_rng(0).random((1, 3, 400, 300), dtype=np.float32))
print(high_water() - before)
"""


@pytest.mark.parametrize(
    "model, options",
    [
        ("fcn8s", '{"backbone": "vgg16", "widths": [8, 16, 16, 32, 32], "fc_width": 32}'),
        ("unpool", "{}"),
    ],
)
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads VmHWM from /proc")
def test_forward_bytes_bounds_the_measured_peak(model, options):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "-c", PROBE, model, options],
        capture_output=True,
        text=True,
        cwd=root,
        check=True,
    )
    measured = int(done.stdout.split()[-1])
    estimate = forward_bytes(build_model(model, 21, **json.loads(options)), (400, 300))
    assert measured <= estimate <= 3 * measured, (measured / GIB, estimate / GIB)
