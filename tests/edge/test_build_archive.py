"""scripts/build_archive.py (./archive.sh): what a user sees for names it cannot serve, and the spec it writes."""

import json
import zipfile

import pytest

from scripts import build_archive


@pytest.mark.parametrize(
    "argv, text",
    [
        (["vit_b_16"], "archive.sh: vit_b_16 is a vision transformer: its blocks output token sequences"),
        (["lenet"], "archive.sh: unknown model 'lenet': not one of torchvision's CNNs (alexnet, "),
    ],
)
def test_names_it_cannot_serve_end_with_one_clear_line(argv, text):
    with pytest.raises(SystemExit) as stop:
        build_archive.main(argv)
    assert str(stop.value).startswith(text)


def test_unknown_weights_entry_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stop:
        build_archive.main(["--weights-name", "IMAGENET1K_V9", "alexnet"])
    assert stop.value.code == 2 and "alexnet has no weights 'IMAGENET1K_V9'" in capsys.readouterr().err


def test_a_batch_delay_of_zero_is_refused_with_why(capsys):
    """TorchServe 0.12 reads maxBatchDelay 0 as unset and waits its default 100 ms (measured: a lone classify
    132 ms)."""
    with pytest.raises(SystemExit) as stop:
        build_archive.main(["--max-batch-delay", "0", "alexnet"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "--max-batch-delay must be at least 1 ms, got 0" in err and "100 ms" in err


def test_the_archive_carries_the_complete_spec(tmp_path):
    assert build_archive.main(["--random-weights", "--out", str(tmp_path), "squeezenet1_1"]) == 0
    with zipfile.ZipFile(tmp_path / "squeezenet1_1_viz.mar") as mar:
        spec = json.loads(mar.read("spec.json"))
        config = mar.read("model-config.yaml").decode()
    assert spec["arch"] == "squeezenet1_1" and spec["weights"] == "random" and spec["cam_layer"] == "features"
    assert spec["input_shape"] == [3, 224, 224] and spec["min_side"] == 17 and len(spec["labels"]) == 1000
    assert spec["featuremap_layers"] == ["features.0", "features"] and "weights_file: weights.pt" in config
    assert "\nbatchSize: 8\n" in config and "\nmaxBatchDelay: 1\n" in config  # docs/development.md, "Benchmarks"
