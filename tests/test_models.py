"""Classifiers: shapes, built-in normalisation, checkpoint round trip, errors."""

import pytest
import torch

from gcln_fast.models import ARCHS, build_classifier, load_classifier, save_classifier
from gcln_fast.models.classifiers import Normalize


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_shape(arch):
    torch.manual_seed(0)
    model = build_classifier(arch, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    assert model.arch == arch and model.num_classes == 7


def test_resnet_adapted_to_32px():
    net = build_classifier("resnet18").net
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1)
    assert isinstance(net.maxpool, torch.nn.Identity)


def test_normalisation_is_first_module():
    model = build_classifier("small_cnn", mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5))
    first = next(iter(model.children()))
    assert isinstance(first, Normalize)
    x = torch.rand(2, 3, 32, 32)
    expected = (x - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / 0.5
    assert torch.allclose(model.normalize(x), expected)
    assert "normalize.mean" in model.state_dict() and "normalize.std" in model.state_dict()


@pytest.mark.parametrize("arch", ["small_cnn", "resnet18"])
def test_save_load_roundtrip(tmp_path, arch):
    torch.manual_seed(1)
    model = build_classifier(arch, mean=(0.4, 0.4, 0.4), std=(0.2, 0.3, 0.2))
    model.train()
    model(torch.rand(8, 3, 32, 32))  # move the BN running statistics away from their init
    model.eval()
    path = save_classifier(model, tmp_path / "m.pt", arch=arch, num_classes=10, dataset="embedded", val_acc=0.5)
    ckpt = torch.load(path, weights_only=True)
    assert (
        set(ckpt) == {"kind", "arch", "num_classes", "state_dict", "meta"}
        and ckpt["kind"] == "classifier"
        and ckpt["meta"]["dataset"] == "embedded"
    )
    loaded = load_classifier(path)
    assert not loaded.training and loaded.arch == arch
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert torch.equal(loaded.normalize.std, model.normalize.std)
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temporary behind


def test_unknown_arch():
    with pytest.raises(ValueError, match="small_cnn.*resnet18.*resnet34"):
        build_classifier("vgg16")


def test_load_rejects_non_classifier(tmp_path):
    from gcln_fast.utils.checkpoint import atomic_save

    atomic_save({"foo": 1}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="x.pt is not a classifier checkpoint"):
        load_classifier(tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError):
        load_classifier(tmp_path / "missing.pt")
