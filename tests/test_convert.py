"""``fcn-scratch convert``, ``load_model`` and ``train --init-from`` end to end (float32).

Sources are narrow VGG16s built in torch with random weights (``torch_sources``) and saved
with ``torch.save``; nothing is downloaded.
"""

import argparse
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import fcn_scratch
from fcn_scratch import Tensor
from fcn_scratch.cli import main
from fcn_scratch.models.preprocess import CAFFE_BGR, TORCHVISION
from fcn_scratch.train import load_checkpoint
from fcn_scratch.train.evaluation import inference

NARROW = {"widths": (4, 8, 8, 16, 16), "fc_width": 16}


def test_port_checkpoint_converts_to_the_same_logits_float32(torch, tmp_path, capsys):
    from test_vgg16 import assert_close, preprocessed
    from torch_sources import PortFCN, randomise

    source = randomise(PortFCN("fcn8s", 21, **NARROW))
    src, dst = tmp_path / "fcn8s.pth", tmp_path / "fcn8s.npz"
    torch.save({"epoch": 3, "model_state_dict": source.state_dict()}, src)
    assert main(["convert", str(src), "-o", str(dst)]) == 0
    assert "fcn8s, 21 classes, input BGR" in capsys.readouterr().out
    net = fcn_scratch.load_model(str(dst))
    assert not net.training and next(net.parameters()).device == "cpu"
    ckpt = load_checkpoint(str(dst))
    assert ckpt.config.model_kwargs["preprocess"] == CAFFE_BGR
    assert ckpt.class_names[15] == "person"
    x = np.random.default_rng(0).random((1, 3, 41, 58), dtype=np.float32)
    with inference(net):
        ours = net(Tensor(x)).numpy()
    with torch.no_grad():
        ref = source(preprocessed(torch, x.astype(np.float64), CAFFE_BGR).float()).numpy()
    assert_close(ours, ref, 1e-4)


def test_torchvision_vgg16_converts_to_an_fcn_to_fine_tune(torch, tmp_path):
    from torch_sources import TorchvisionVGG16, randomise

    vgg = randomise(TorchvisionVGG16(**NARROW))
    src, dst = tmp_path / "vgg16.pth", tmp_path / "fcn.npz"
    torch.save(vgg.state_dict(), src)
    assert (
        main(["convert", str(src), "-o", str(dst), "--model", "fcn32s", "--num-classes", "3"]) == 0
    )
    ckpt = load_checkpoint(str(dst))
    assert (ckpt.config.model, ckpt.class_names) == ("fcn32s", ["background", "class 1", "class 2"])
    assert ckpt.config.model_kwargs["preprocess"] == TORCHVISION
    np.testing.assert_array_equal(
        ckpt.model_state["fc6.weight"],
        vgg.classifier[0].weight.detach().numpy().reshape(16, 16, 7, 7),
    )
    np.testing.assert_array_equal(
        ckpt.model_state["backbone.conv3.4.bias"], vgg.features[14].bias.detach().numpy()
    )
    assert not ckpt.model_state["score_fr.weight"].any()
    net = fcn_scratch.load_model(str(dst))
    with inference(net):
        assert net(Tensor(np.ones((1, 3, 33, 47), np.float32))).shape == (1, 3, 33, 47)


@pytest.mark.parametrize(
    "payload, message",
    [
        ("text", "not a PyTorch file of weights"),
        ("list", "expected a state dict .* got a list"),
        ("keys", r'Missing key\(s\): "conv3_2.bias"'),
        ("none", "no such file"),
    ],
)
def test_wrong_sources_get_a_clear_cli_error(torch, tmp_path, capsys, payload, message):
    from torch_sources import PortFCN

    src = tmp_path / "source.pth"
    if payload == "text":
        src.write_text("hello")
    elif payload == "list":
        torch.save([torch.zeros(2)], src)
    elif payload == "keys":
        state = PortFCN("fcn8s", 3, **NARROW).state_dict()
        del state["conv3_2.bias"]
        torch.save(state, src)
    assert main(["convert", str(src), "-o", str(tmp_path / "out.npz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fcn-scratch convert: error: ")
    assert re.search(message, err), err
    assert not (tmp_path / "out.npz").exists()


def test_convert_without_torch_says_what_to_install(tmp_path, capsys, monkeypatch):
    src = tmp_path / "x.pth"
    src.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    assert main(["convert", str(src), "-o", str(tmp_path / "y.npz")]) == 2
    assert "needs torch: pip install 'fcn-scratch[torch]'" in capsys.readouterr().err


def test_nothing_but_convert_imports_torch():
    code = (
        "import sys, fcn_scratch, fcn_scratch.models, fcn_scratch.train, fcn_scratch.data\n"
        "import fcn_scratch.commands.train, fcn_scratch.commands.predict\n"
        "import fcn_scratch.commands.evaluate, fcn_scratch.commands.convert\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )


def tiny_folder(root, sizes, num_classes, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(root / "images"), os.makedirs(root / "masks")
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            root / "images" / f"{i}.png"
        )
        mask = rng.integers(0, num_classes, (h, w)).astype(np.uint8)
        Image.fromarray(mask, mode="L").save(root / "masks" / f"{i}.png")


def test_train_init_from_starts_from_the_converted_weights(torch, tmp_path):
    from torch_sources import TorchvisionVGG16, randomise

    from fcn_scratch.commands import train as train_command

    torch.save(randomise(TorchvisionVGG16(**NARROW)).state_dict(), tmp_path / "vgg.pth")
    init = str(tmp_path / "init.npz")
    assert main(["convert", str(tmp_path / "vgg.pth"), "-o", init, "--num-classes", "3"]) == 0
    tiny_folder(tmp_path / "data", [(40, 40)] * 5, 3)
    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    argv = ["--init-from", init, "--data", str(tmp_path / "data"), "--image-size", "32"]
    trainer = train_command.build_trainer(
        parser.parse_args([*argv, "--out", str(tmp_path / "run")])
    )
    ckpt = load_checkpoint(init)
    assert trainer.config.model_kwargs == ckpt.config.model_kwargs
    assert trainer.config.widths == NARROW["widths"]
    for name, value in trainer.model.state_dict().items():
        np.testing.assert_array_equal(value, ckpt.model_state[name], err_msg=name)
    with pytest.raises(
        ValueError, match="--init-from .* model is fixed by the file; model is 'fcn8s'"
    ):
        train_command.build_trainer(parser.parse_args([*argv, "--model", "fcn32s"]))
    tiny_folder(tmp_path / "data4", [(40, 40)] * 5, 4, seed=1)
    with pytest.raises(ValueError, match="scores 3 classes, the data has 4"):
        train_command.build_trainer(
            parser.parse_args(
                ["--init-from", init, "--data", str(tmp_path / "data4"), "--image-size", "32"]
            )
        )
