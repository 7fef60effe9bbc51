"""Fine-tuning path: an ImageNet-ZF-shaped caffemodel loads by name into conv1..fc7; the new layers keep their fillers."""

import caffe
import numpy as np
import pytest
from caffe.proto import caffe_pb2
from google.protobuf import text_format

from models.config import get_config, get_variant
from models.tempregnet import net_proto

TRUNK = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")
# Blob shapes of the ImageNet ZF model of the Faster R-CNN releases (ZF.v2.caffemodel).
IMAGENET_ZF_SHAPES = {
    "conv1": (96, 3, 7, 7), "conv2": (256, 96, 5, 5), "conv3": (384, 256, 3, 3),
    "conv4": (384, 384, 3, 3), "conv5": (256, 384, 3, 3), "fc6": (4096, 9216), "fc7": (4096, 4096),
}

@pytest.fixture(scope="module")
def fake_imagenet_zf(tmp_path_factory):
    """A caffemodel with the ImageNet ZF layer names and shapes (plus its fc8 classifier), random values."""
    deploy = net_proto(get_config("zf"), get_variant("tempreg"), "deploy")
    keep = [layer for layer in deploy.layer if layer.type == "Input" and layer.name == "frames"]
    keep += [layer for layer in deploy.layer if layer.type not in ("Input",) and
             (layer.name in TRUNK or layer.name.startswith(("relu", "norm", "pool", "drop")))
             and layer.name != "relu_frame"]
    net = caffe_pb2.NetParameter(layer=keep)
    fc8 = net.layer.add(name="fc8", type="InnerProduct", bottom=["fc7"], top=["fc8"])
    fc8.inner_product_param.num_output = 1000
    folder = tmp_path_factory.mktemp("imagenet")
    (folder / "zf_imagenet.prototxt").write_text(text_format.MessageToString(net))
    caffe.set_mode_cpu()
    source = caffe.Net(str(folder / "zf_imagenet.prototxt"), caffe.TEST)
    rng = np.random.default_rng(0)
    for name, blobs in source.params.items():
        for blob in blobs:
            blob.data[...] = rng.uniform(1.0, 2.0, blob.data.shape)   # unlike any of our fillers
    for name, shape in IMAGENET_ZF_SHAPES.items():
        assert source.params[name][0].data.shape == shape, name
    path = folder / "ZF.fake.caffemodel"
    source.save(str(path))
    values = {name: [b.data.copy() for b in source.params[name]] for name in TRUNK}
    del source
    return path, values

def test_imagenet_blobs_arrive_and_new_layers_keep_their_fillers(fake_imagenet_zf, tmp_path):
    weights, values = fake_imagenet_zf
    deploy = tmp_path / "deploy.prototxt"
    deploy.write_text(text_format.MessageToString(net_proto(get_config("zf"), get_variant("tempreg"), "deploy")))
    caffe.set_mode_cpu()
    net = caffe.Net(str(deploy), str(weights), caffe.TEST)     # what `caffe train -weights` does
    assert net.params["fc6"][0].data.shape == (4096, 9216)
    for name in TRUNK:
        for got, want in zip(net.params[name], values[name]):
            np.testing.assert_array_equal(got.data, want, err_msg=name)
    assert "fc8" not in net.params

    fc_frame = net.params["fc_frame"][0].data                 # xavier: U(+-sqrt(3 / fan_in))
    bound = np.sqrt(3.0 / 4096)
    assert np.abs(fc_frame).max() <= bound and fc_frame.std() == pytest.approx(bound / np.sqrt(3), rel=0.05)
    np.testing.assert_array_equal(net.params["fc_frame"][1].data, 0)
    for blob in net.params["lstm1"]:                          # U[-0.01, 0.01], section 3
        assert np.abs(blob.data).max() <= 0.01 and blob.data.std() > 0.004
    head = net.params["volume_pred"][0].data                   # xavier over the 256 LSTM outputs
    head_bound = np.sqrt(3.0 / 256)
    assert np.abs(head).max() <= head_bound and 0.5 * head_bound < np.sqrt(3) * head.std() < 1.5 * head_bound

def test_fetch_accepts_a_local_caffemodel_and_checks_it(fake_imagenet_zf, tmp_path):
    from tools.fetch_imagenet_zf import fetch
    weights, _ = fake_imagenet_zf
    out = fetch(tmp_path / "w" / "ZF.v2.caffemodel", source=weights)
    assert out.read_bytes() == weights.read_bytes()
    with pytest.raises(Exception, match="exists; pass --force"):
        fetch(out, source=weights)

def test_fetch_rejects_a_wrong_archive_and_a_failed_download(tmp_path, capsys):
    import io
    import tarfile

    from tools.fetch_imagenet_zf import fetch, main
    archive = tmp_path / "imagenet_models.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        data = b"not a model"
        info = tarfile.TarInfo("imagenet_models/ZF.v2.caffemodel")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert main(["--from", str(archive), "--out", str(tmp_path / "a.caffemodel")]) == 1
    err = capsys.readouterr().err.strip()
    assert "is not the release's ed34ca912d6782edfb673a8c3a0bda6d" in err and len(err.splitlines()) == 1
    with pytest.raises(Exception, match="download failed"):
        fetch(tmp_path / "b.caffemodel", url="http://127.0.0.1:9/imagenet_models.tgz")
    assert not (tmp_path / "b.caffemodel").exists() and not (tmp_path / "a.caffemodel").exists()

def test_fetch_rejects_a_caffemodel_of_another_net(tmp_path):
    from tools.fetch_imagenet_zf import fetch
    net = caffe_pb2.NetParameter()
    layer = net.layer.add(name="conv1", type="Convolution")
    layer.blobs.add().shape.dim.extend([4, 3, 3, 3])
    other = tmp_path / "other.caffemodel"
    other.write_bytes(net.SerializeToString())
    with pytest.raises(Exception, match="not the ImageNet ZF model"):
        fetch(tmp_path / "c.caffemodel", source=other)
