import pytest
import torch
import torch.nn.functional as F

from vggnet import build
from vggnet import cam as cam_module
from vggnet.cam import class_activation_map, gradcam, gradcams, last_relu, top_gradcams
from vggnet.features import features_at
from vggnet.weights import Preprocessing

W = 1 / 16
SIDE, PATCH = 64, 8
CENTRED = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))  # zero padding = the grey background


def two_patches(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grey noise with a red square in the left third and a green one in the right third of each image.

    Returns (x 0-1 RGB, red mask, green mask), the masks (N, SIDE, SIDE) booleans.
    """
    x = (0.4 + 0.2 * torch.rand(n, 1, SIDE, SIDE, generator=g)).expand(n, 3, SIDE, SIDE).clone()
    masks = torch.zeros(2, n, SIDE, SIDE, dtype=torch.bool)
    for colour, low in ((0, 0), (1, 2 * SIDE // 3)):
        rows = torch.randint(0, SIDE - PATCH + 1, (n,), generator=g).tolist()
        cols = torch.randint(low, low + SIDE // 3 - PATCH + 1, (n,), generator=g).tolist()
        for i, (r, c) in enumerate(zip(rows, cols, strict=True)):
            masks[colour, i, r : r + PATCH, c : c + PATCH] = True
            x[i, :, r : r + PATCH, c : c + PATCH] = torch.eye(3)[colour][:, None, None]
    return x, masks[0], masks[1]


@pytest.fixture(scope="module")
def colour_net():
    """A gap-head VGG A whose weights are set by hand, so that Grad-CAM's answer is known on any CPU.

    conv1_1's channel 0 is relu(R - G - 1) and channel 1 relu(G - R - 1) of the centred image: 3 on a red
    (resp. green) pixel, exactly 0 on grey, where R = G. Every later conv passes channels 0 and 1 through
    (centre tap 1), the max pools shrink them, and the head scores class 0 as the mean of channel 0, class 1
    as that of channel 1, class 2 as a constant. The values are small integers, so no rounding differs.
    """
    model = build("A", width=W, num_classes=3, head="gap", input_size=SIDE)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
        convs[0].weight[0, :2, 1, 1] = torch.tensor([1.0, -1.0])
        convs[0].weight[1, :2, 1, 1] = torch.tensor([-1.0, 1.0])
        convs[0].bias[:2] = -1.0
        for conv in convs[1:]:
            conv.weight[0, 0, 1, 1] = conv.weight[1, 1, 1, 1] = 1.0
        head = model.classifier[0]
        head.weight[0, 0] = head.weight[1, 1] = 1.0
        head.bias[2] = 1.0
    return model.eval()


def pooled(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """A (N, H, W) boolean mask after the max pools that bring the image to a layer's resolution, as 0/1 floats."""
    return F.max_pool2d(mask[:, None].float(), factor)[:, 0]


@pytest.mark.parametrize(("layer", "factor"), [("relu2_1", 2), ("relu3_1", 4), ("relu4_2", 8)])
def test_gradcam_lights_the_patch_of_the_target_class_and_nothing_else(colour_net, layer, factor):
    x, red, green = two_patches(8, torch.Generator().manual_seed(1))
    for target, mine, other in ((0, red, green), (1, green, red)):
        cam = gradcam(colour_net, x, layer, target, CENTRED, upsample=False)
        # Grad-CAM weights channel k by the mean gradient of the class score there: only the target's colour
        # channel has one, and it is positive, so the map is that channel's activation: the pooled patch
        assert torch.equal(cam, pooled(mine, factor)), (layer, target)
        assert (cam * pooled(other, factor)).sum() == 0
        full = gradcam(colour_net, x, layer, target, CENTRED)
        assert full.shape == (8, SIDE, SIDE) and torch.allclose(full.amax(dim=(1, 2)), torch.ones(8))
        assert (full[other] == 0).all() and (full[mine] > 0).all()


MISTAKES = {  # what a wrong Grad-CAM would compute in place of vggnet.cam._cam / _targets
    "_cam: activations without gradient weights": lambda a, g, size: cam_module._normalised(a.detach().sum(1), size),
    "_cam: the gradient's sign flipped": lambda a, g, size: cam_module._normalised(
        (-g.mean(dim=(2, 3), keepdim=True) * a.detach()).sum(1).clamp(min=0), size
    ),
    "_targets: the other class's score": lambda target, logits: 1 - torch.as_tensor(target).expand(len(logits)),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_the_known_answer_fails_a_wrong_gradcam(colour_net, monkeypatch, mistake):
    monkeypatch.setattr(cam_module, mistake.split(":")[0], MISTAKES[mistake])
    x, red, _ = two_patches(4, torch.Generator().manual_seed(2))
    assert not torch.equal(gradcam(colour_net, x, "relu3_1", 0, CENTRED, upsample=False), pooled(red, 4))


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


def test_cam_of_the_gap_head_agrees_with_gradcam_at_the_pooled_layer(colour_net):
    x, red, _ = two_patches(4, torch.Generator().manual_seed(3))
    x = F.interpolate(x, scale_factor=2)  # 128 px: a 4x4 final map
    cam = class_activation_map(colour_net, x, 0, preprocessing=CENTRED, upsample=False)
    grad = gradcam(colour_net, x, "pool5", 0, preprocessing=CENTRED, upsample=False)
    # for a linear head on global average pooling, both are w_c . A up to an offset and a scale: here channel 0
    expected = pooled(F.interpolate(red[:, None].float(), scale_factor=2)[:, 0].bool(), 32)
    assert cam.shape == grad.shape == (4, 4, 4) and torch.equal(cam, expected) and torch.equal(grad, expected)
    assert class_activation_map(colour_net, x, preprocessing=CENTRED).shape == (4, 128, 128)
