import pytest

from vggnet.configs import ALIASES, CONFIGS, config_names, resolve, weight_layers


@pytest.mark.parametrize(
    "name, expected",
    [
        ("A", ("A", False)),
        ("a-lrn", ("A-LRN", False)),
        ("A_LRN", ("A-LRN", False)),
        ("vgg11_lrn", ("A-LRN", False)),
        ("vgg16_c", ("C", False)),
        ("vgg16", ("D", False)),
        ("vgg19_bn", ("E", True)),
        ("D_bn", ("D", True)),
        ("vgg13", ("B", False)),
        ("B-5x5", ("B-5x5", False)),
        ("b-5X5_bn", ("B-5x5", True)),
        ("D_7x7", ("D-7x7", False)),
    ],
)
def test_resolve(name, expected):
    assert resolve(name) == expected


def test_unknown_name_lists_accepted():
    with pytest.raises(
        ValueError, match=r"unknown VGG configuration 'vgg17'; accepted: A, A-LRN, B, C, D, E, B-5x5, D-7x7, vgg11"
    ):
        resolve("vgg17")


@pytest.mark.parametrize(
    "letter, depth", [("A", 11), ("A-LRN", 11), ("B", 13), ("C", 16), ("D", 16), ("E", 19), ("B-5x5", 8), ("D-7x7", 8)]
)
def test_weight_layers_match_table1(letter, depth):
    assert weight_layers(letter) == depth


def test_every_name_resolves():
    names = config_names()
    assert len(names) == 2 * (len(CONFIGS) + len(ALIASES))
    for n in names:
        letter, bn = resolve(n)
        assert letter in CONFIGS and bn == n.endswith("_bn")


def test_old_field_names_are_still_accepted():
    import dataclasses

    from vggnet.configs import ModelConfig, TrainConfig
    from vggnet.model import VGG

    cfg = ModelConfig(config="vgg16_bn")
    assert cfg.arch == cfg.config == "vgg16_bn" and "config" not in dataclasses.asdict(cfg)
    assert dataclasses.replace(cfg, config="E").arch == "E"  # replace() passes both names: the old one wins
    assert VGG(config="B", width=1 / 16).cfg.arch == "B"
    assert TrainConfig(model="D").arch == "D" and TrainConfig(model="D").model == "D"
    assert ModelConfig(arch="D").display_name() == "D" and ModelConfig(arch="vgg19_bn").display_name() == "E_bn"
    assert ModelConfig(arch="A", width=0.125).display_name(with_width=True) == "A (width 1/8)"
