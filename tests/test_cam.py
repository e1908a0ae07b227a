import pytest
import torch
import torch.nn.functional as F

from vggnet import build
from vggnet.cam import class_activation_map, gradcam, gradcams, last_relu, top_gradcams
from vggnet.features import features_at
from vggnet.weights import Preprocessing

W = 1 / 16
SIDE, PATCH = 32, 8
COLOURS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # class 0: a red patch, class 1: a green one, class 2: none
CENTRED = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))  # zero padding = the grey background


def patches(n: int, g: torch.Generator, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grey noise with a coloured square whose colour is the class: (x 0-1 RGB, labels, top-left corners).

    The third class (no square) makes both colours positive evidence: with two classes, a net may learn
    one colour as "not the other", and Grad-CAM, which keeps only positive evidence, shows nothing.
    """
    x = (0.4 + 0.2 * torch.rand(n, 1, SIDE, SIDE, generator=g)).expand(n, 3, SIDE, SIDE).clone()
    y = torch.randint(0, classes, (n,), generator=g)
    corner = torch.randint(0, SIDE - PATCH + 1, (n, 2), generator=g)
    for i, (r, c) in enumerate(corner.tolist()):
        if y[i] < len(COLOURS):
            x[i, :, r : r + PATCH, c : c + PATCH] = COLOURS[y[i]][:, None, None]
    return x, y, corner


@pytest.fixture(scope="module")
def patch_net():
    """A gap-head VGG A trained for 30 steps to tell the square's colour or its absence."""
    torch.manual_seed(0)
    model = build("A_bn", width=W, num_classes=3, head="gap", input_size=SIDE)
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(30):
        x, y, _ = patches(32, g)
        loss = F.cross_entropy(model(CENTRED(x)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("layer", ["relu2_1", "relu3_1"])
def test_gradcam_peaks_on_the_patch_that_decides_the_class(patch_net, layer):
    x, y, corner = patches(16, torch.Generator().manual_seed(1), classes=2)
    assert (patch_net(CENTRED(x)).argmax(1) == y).all()
    cam = gradcam(patch_net, x, layer, preprocessing=CENTRED)
    assert cam.shape == (16, SIDE, SIDE) and cam.min() >= 0 and torch.allclose(cam.amax(dim=(1, 2)), torch.ones(16))
    for i, (r, c) in enumerate(corner.tolist()):
        top_r, top_c = divmod(cam[i].argmax().item(), SIDE)
        assert r <= top_r < r + PATCH and c <= top_c < c + PATCH, (i, (top_r, top_c), (r, c))


def test_gradcam_is_the_gradient_weighted_sum_and_layers_share_one_pass():
    model = build("D_bn", width=W, num_classes=4).eval()
    x = torch.rand(2, 3, 64, 64)
    maps = gradcams(model, x, ["relu3_3", "conv4_1", "pool5"], target=[1, 3], upsample=False)
    assert [tuple(m.shape) for m in maps.values()] == [(2, 16, 16), (2, 8, 8), (2, 2, 2)]
    # the same map by hand, at relu3_3 (features.22), for image 1 and class 3
    a = model.features[:23](x[1:]).detach().requires_grad_()
    score = model.classifier(torch.flatten(model.avgpool(model.features[23:](a.clone())), 1))[0, 3]
    (g,) = torch.autograd.grad(score, a)
    expected = (g.mean(dim=(2, 3), keepdim=True) * a).sum(1).clamp(min=0)[0].detach()
    assert torch.allclose(maps["relu3_3"][1], expected / expected.max(), atol=1e-5)
    assert torch.equal(gradcam(model, x, "relu3_3", [1, 3], upsample=False), maps["relu3_3"])
    assert last_relu(model) == "relu5_3"


def test_top_gradcams_share_one_forward_pass_and_equal_one_pass_per_class():
    model = build("B_bn", width=W, num_classes=6).eval()
    x = torch.rand(2, 3, 64, 64)
    layers = ["conv2_1", "relu4_2"]
    ev = top_gradcams(model, x, layers, k=3, preprocessing=CENTRED, upsample=False)
    probs = model(CENTRED(x)).softmax(1)
    assert torch.equal(ev.classes, probs.topk(3).indices) and torch.allclose(ev.probs, probs.topk(3).values)
    taps = features_at(model, x, layers, CENTRED)
    assert all(torch.equal(ev.activations[n], taps[n]) for n in layers)  # conv2_1 before its ReLU, as features_at
    for r in range(3):
        one = gradcams(model, x, layers, ev.classes[:, r], CENTRED, upsample=False)
        assert all(torch.allclose(ev.maps[n][:, r], one[n], atol=1e-6) for n in layers)
    assert ev.maps["relu4_2"].shape == (2, 3, 8, 8)
    assert top_gradcams(model, x, ["relu4_2"], k=10).maps["relu4_2"].shape == (2, 6, 64, 64)  # k capped


def test_default_target_is_the_top_class_and_bad_arguments_are_one_line_errors():
    model = build("A", width=W, num_classes=3).eval()
    x = torch.rand(2, 3, 32, 32)
    top = model(x).argmax(1)
    assert torch.equal(gradcam(model, x), gradcam(model, x, "relu5_2", top))
    with pytest.raises(ValueError, match=r"unknown: \['fc6'\]; available: conv1_1, relu1_1"):
        gradcam(model, x, "fc6")
    with pytest.raises(ValueError, match=r"target must be one class index in \[0, 3\) or one per image \(2\)"):
        gradcam(model, x, target=[0, 1, 2])
    with pytest.raises(ValueError, match="CAM needs the gap head, this VGG has the fc head; use gradcam"):
        class_activation_map(model, x)


def test_cam_of_the_gap_head_agrees_with_gradcam_at_the_pooled_layer(patch_net):
    x, _, _ = patches(4, torch.Generator().manual_seed(2), classes=2)
    x = F.interpolate(x, scale_factor=4)  # 128 px: a 4x4 final map, so the maps have somewhere to differ
    cam = class_activation_map(patch_net, x, preprocessing=CENTRED, upsample=False)
    grad = gradcam(patch_net, x, "pool5", preprocessing=CENTRED, upsample=False)
    assert cam.shape == grad.shape == (4, 4, 4) and cam.min() == 0 and (cam.amax(dim=(1, 2)) == 1).all()
    # for a linear head on global average pooling, both are w_c . A up to an offset and a scale
    assert torch.equal(cam.flatten(1).argmax(1), grad.flatten(1).argmax(1))
    assert class_activation_map(patch_net, x, preprocessing=CENTRED).shape == (4, 128, 128)
