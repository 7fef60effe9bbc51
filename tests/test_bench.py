"""The benchmarks' FLOP count (the floor of every bench figure) against sizes worked out by hand."""
import pytest

caffe = pytest.importorskip("caffe", reason="pycaffe is not built: run `make caffe`")

from models.config import get_config, get_variant  # noqa: E402
from models.tempregnet import net_proto  # noqa: E402
from tempregnet.benchmark import load, net_flops, timing_train_net  # noqa: E402


def test_zf_deploy_flops_by_hand():
    # 192 px: conv1 96 x 96, pool1 49, conv2 25, pool2 13, conv3-5 13, pool5 6; 20 frames.
    per_frame = (96 * 96 * 96 * 3 * 49 + 256 * 25 * 25 * 96 * 25 + 384 * 13 * 13 * 256 * 9
                 + 384 * 13 * 13 * 384 * 9 + 256 * 13 * 13 * 384 * 9
                 + 4096 * 9216 + 4096 * 4096 + 1024 * 4096 + 4 * 256 * (1024 + 256) + 256)
    net = load(net_proto(get_config("zf"), get_variant("tempreg"), "deploy", batch_size=1), caffe.TEST)
    forward, train = net_flops(net)
    assert forward == 2 * 20 * per_frame
    conv1 = 2 * 20 * 96 * 96 * 96 * 3 * 49          # no bottom gradient below the input
    assert train == 3 * forward - conv1


def test_small_train_flops_scale_with_batch_and_count_the_lstm_cycles():
    cfg = get_config("small")
    one, two = (net_flops(load(timing_train_net(cfg, get_variant("tempreg"), n), caffe.TRAIN))
                for n in (1, 2))
    assert two[0] == 2 * one[0] and two[1] == 2 * one[1]
    h, q = cfg.lstm_hidden, cfg.feature_dim
    lstm = 2 * cfg.lstm_cycles * 20 * 4 * h * (q + h)   # the LSTM reads the cycle lstm_cycles times
    cnn_reg = net_flops(load(timing_train_net(cfg, get_variant("cnn_reg"), 1), caffe.TRAIN))
    head_difference = 2 * 20 * (h - q)                   # volume_pred reads h (LSTM) or q features
    assert one[0] - cnn_reg[0] == lstm + head_difference
