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
    with pytest.raises(ValueError, match="small_cnn.*resnet20.*resnet18.*resnet34"):
        build_classifier("vgg16")


def test_load_rejects_non_classifier(tmp_path):
    from gcln_fast.utils.checkpoint import atomic_save

    atomic_save({"foo": 1}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="x.pt is not a classifier checkpoint"):
        load_classifier(tmp_path / "x.pt")
    with pytest.raises(FileNotFoundError):
        load_classifier(tmp_path / "missing.pt")


def test_resnet20_is_the_cifar_resnet_with_option_a_shortcuts():
    model = build_classifier("resnet20")
    net = model.net
    # He et al. (2016), section 4.2: 0.27 M parameters for n = 3 (19 conv layers + the linear head)
    assert sum(p.numel() for p in model.parameters()) == 269_722
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 19 and all(c.kernel_size == (3, 3) for c in convs)
    # option A: the downsampling shortcut has no parameters; it subsamples and zero-pads channels
    block = net.layer2[0]
    x = torch.randn(2, 16, 32, 32)
    sc = block.shortcut(x)
    assert sc.shape == (2, 32, 16, 16)
    torch.testing.assert_close(sc[:, 8:24], x[:, :, ::2, ::2])
    assert float(sc[:, :8].abs().sum()) == 0 and float(sc[:, 24:].abs().sum()) == 0
    # CIFAR-10 normalisation inside the model
    assert torch.allclose(model.normalize.mean.flatten(), torch.tensor([0.4914, 0.4822, 0.4465]))
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(3, 3, 32, 32))
    assert out.shape == (3, 10)


def test_resnet20_learns_a_tiny_task():
    from helpers import toy_data

    torch.manual_seed(0)
    x, y = toy_data(64)
    model = build_classifier("resnet20", num_classes=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]  # gradients flow through every stage and the shortcuts
    with torch.no_grad():  # train mode: 15 steps are too few for the BN running statistics
        assert float((model(x).argmax(1) == y).float().mean()) >= 0.9
