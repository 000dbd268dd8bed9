import pytest

from cnnviz import LayerTable, UnknownLayer, build_model
from tests.tiny import Tiny


@pytest.fixture(scope="module")
def table():
    return LayerTable(Tiny(), (3, 2, 3))


def test_table_lists_every_named_module_with_its_output_shape(table):
    assert [i.as_dict() for i in table] == [
        {"name": "features", "type": "Sequential", "output_shape": [2, 1, 2]},
        {"name": "features.0", "type": "Conv2d", "output_shape": [2, 1, 2]},
        {"name": "features.1", "type": "ReLU", "output_shape": [2, 1, 2]},
        {"name": "pool", "type": "AdaptiveAvgPool2d", "output_shape": [2, 1, 1]},
        {"name": "fc", "type": "Linear", "output_shape": [3]},
    ]
    assert table.conv_names == ["features.0"]
    assert table.default_layers == ["features.0"]
    assert table.spatial_names == ["features", "features.0", "features.1", "pool"]


def test_unknown_layer_names_the_valid_ones(table):
    with pytest.raises(UnknownLayer, match=r"unknown layer 'features\.9'.*valid: features, features\.0, "):
        table.resolve(["features.9"])


@pytest.mark.parametrize("name", ["__class__", "features.0.weight", "fc.__init__", "", "features[0]"])
def test_names_that_try_to_reach_attributes_are_unknown(table, name):
    with pytest.raises(UnknownLayer):
        table.resolve([name])


def test_need_spatial_and_need_filters(table):
    with pytest.raises(UnknownLayer, match=r"'fc' \(Linear\) outputs \[3\], not \[C, H, W\]"):
        table.resolve(["fc"], need="spatial")
    with pytest.raises(UnknownLayer, match=r"'features\.1' \(ReLU\) has no convolution filters; layers that do: "):
        table.resolve(["features.1"], need="filters")
    assert table.resolve(["features.1", "features.0", "features.1"], need="spatial") == ["features.1", "features.0"]


def test_table_restores_train_mode():
    model = Tiny().train()
    LayerTable(model, (3, 2, 3))
    assert model.training


@pytest.mark.parametrize(
    "arch, first, last, shape_first, shape_last",
    [
        ("alexnet", "features.0", "features.10", [64, 55, 55], [256, 13, 13]),
        ("vgg16", "features.0", "features.28", [64, 224, 224], [512, 14, 14]),
        ("resnet18", "conv1", "layer4.1.conv2", [64, 112, 112], [512, 7, 7]),
    ],
)
def test_default_layers_of_the_served_architectures(arch, first, last, shape_first, shape_last):
    table = LayerTable(build_model(arch), (3, 224, 224))
    assert table.default_layers == [first, last]
    assert table[first].as_dict()["output_shape"] == shape_first
    assert table[last].as_dict()["output_shape"] == shape_last
