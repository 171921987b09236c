"""Top-k accuracy with a timm classifier from a local file, and label files."""
import json

import pytest
import torch
from PIL import Image

from lightning_redd.metrics.classifier import TopKAccuracy, preprocess
from lightning_redd.metrics.labels import labels_from_synset_folders, load_labels, load_synset_mapping
from lightning_redd.metrics.weights import hub_checkpoints_dir

pytest.importorskip("timm")
MODEL = "resnet18.tv_in1k"


def _images(seed, n=4, size=64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def _ranked_classes(metric, x):
    net = metric.network()
    with torch.no_grad():
        return net(preprocess(x, metric._cfg)).argsort(dim=1, descending=True)


@pytest.mark.slow
def test_top1_top5_against_the_model_s_own_ranking(resnet_weights):
    x = _images(0)
    metric = TopKAccuracy(MODEL, weights=resnet_weights)
    ranked = _ranked_classes(metric, x)
    # true class = best, 3rd best, 6th best, 2nd best: top1 1/4, top5 3/4
    targets = torch.stack([ranked[0, 0], ranked[1, 2], ranked[2, 5], ranked[3, 1]])
    metric.update(x[:2], targets=targets[:2])
    metric.update(x[2:], targets=targets[2:])
    assert metric.compute() == {"top1": 0.25, "top5": 0.75, "classifier_n_images": 4.0}


def test_labels_by_name_and_default_weight_location(resnet_weights):
    folder = hub_checkpoints_dir()
    folder.mkdir(parents=True)
    (folder / "resnet18-f37072fd.pth").symlink_to(resnet_weights)
    x = _images(1, n=2)
    metric = TopKAccuracy(MODEL, ks=(1,))
    best = _ranked_classes(metric, x)[:, 0]
    metric.labels = {"a": int(best[0]), "b": int(best[1]) + 1 if int(best[1]) < 999 else 0}
    metric.update(x, names=["a.png", "b"])
    assert metric.compute()["top1"] == 0.5
    with pytest.raises(ValueError, match="no label for"):
        metric.update(x, names=["a", "zzz"])


def test_missing_weights_and_unknown_model():
    with pytest.raises(FileNotFoundError, match="resnet18-f37072fd.pth") as err:
        TopKAccuracy(MODEL, labels={"a": 0}).update(_images(0, 1), names=["a"])
    assert "download.pytorch.org" in str(err.value)
    with pytest.raises(ValueError, match="unknown timm model"):
        TopKAccuracy("not_a_model_xyz").network()


def test_label_files(tmp_path):
    (tmp_path / "labels.json").write_text(json.dumps({"img1.JPEG": 3, "img2": 7}))
    assert load_labels(tmp_path / "labels.json") == {"img1": 3, "img2": 7}
    (tmp_path / "labels.csv").write_text("name,label\nimg1.png,3\nimg2,7\n")
    assert load_labels(tmp_path / "labels.csv") == {"img1": 3, "img2": 7}
    (tmp_path / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish\n")
    (tmp_path / "class_index.json").write_text(json.dumps({"0": ["n01440764", "tench"], "1": ["n01443537", "goldfish"]}))
    assert load_synset_mapping(tmp_path / "LOC_synset_mapping.txt") == load_synset_mapping(tmp_path / "class_index.json")
    (tmp_path / "solution.csv").write_text("ImageId,PredictionString\nv1,n01443537 1 2 3 4\nv2,n01440764 5 6 7 8\n")
    assert load_labels(tmp_path / "solution.csv", synset_mapping=tmp_path / "LOC_synset_mapping.txt") == {"v1": 1, "v2": 0}
    with pytest.raises(ValueError, match="synset_mapping"):
        load_labels(tmp_path / "solution.csv")
    for synset, names in {"n01440764": ["a", "b"], "n01443537": ["c"]}.items():
        (tmp_path / "val" / synset).mkdir(parents=True)
        for n in names:
            Image.new("RGB", (4, 4)).save(tmp_path / "val" / synset / f"{n}.JPEG")
    assert labels_from_synset_folders(tmp_path / "val", tmp_path / "LOC_synset_mapping.txt") == {"a": 0, "b": 0, "c": 1}
    with pytest.raises(FileNotFoundError, match="label file"):
        load_labels(tmp_path / "missing.csv")
