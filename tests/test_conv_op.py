"""The custom convolution operator (models/common/conv_op) against Paddle's own
operators in float64: forward, gradient and double gradient to 1e-10.

References: F.conv2d where its double gradient is right (an input that takes a
gradient, more than one input channel per group); the unfold + matmul form the
network used before the operator existed where it is not (the data as input,
one input channel per group). The network-level meta-gradient tests
(tests/test_meta_gradient.py) run with both forms.
"""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from models.common import conv_op
from tests.test_meta_gradient import make_batch, make_config, make_net, project_meta_gradient, relative_error

TOLERANCE = 1e-10

# batch, groups, in channels per group, out channels per group, size, stride, paddings (top, bottom, left, right)
GEOMETRIES = [
    (3, 2, 3, 4, 7, 2, (0, 1, 0, 1)),   # the network's SAME stride 2 on an odd size
    (2, 1, 2, 3, 6, 1, (1, 1, 1, 1)),   # max-pool network's stride 1
    (4, 3, 2, 2, 5, 2, (1, 1, 1, 1)),
    (2, 2, 3, 2, 8, 1, (2, 0, 1, 0)),   # asymmetric
    (2, 2, 2, 3, 14, 2, (0, 1, 0, 1)),  # an even size: SAME pads the end only
]


@pytest.fixture(autouse=True)
def float64():
    if conv_op.load() is None:
        pytest.skip(f"the custom convolution operator does not build here: {conv_op.build_error()}")
    paddle.set_default_dtype("float64")
    yield
    paddle.set_default_dtype("float32")


def tensor(array, grad=True):
    t = paddle.to_tensor(array)
    t.stop_gradient = not grad
    return t


def paddle_conv(x, w, stride, paddings, groups):
    top, bottom, left, right = paddings
    return F.conv2d(F.pad(x, [left, right, top, bottom]), w, stride=stride, groups=groups)


def unfold_conv(x, w, stride, paddings, groups):
    """The convolution as unfold + matmul (x is data: unfold is never differentiated)."""
    n, _, h, width = x.shape
    top, bottom, left, right = paddings
    out_h, out_w = (h + top + bottom - 3) // stride + 1, (width + left + right - 3) // stride + 1
    patches = F.unfold(x, [3, 3], strides=stride, paddings=[top, left, bottom, right])  # [N, G*Ci*9, L]
    patches = patches.reshape([n, groups, -1, out_h * out_w])
    kernels = w.reshape([groups, w.shape[0] // groups, -1])
    return paddle.matmul(kernels.unsqueeze(0).tile([n, 1, 1, 1]), patches).reshape([n, -1, out_h, out_w])


def derivatives(conv, x, w, rng, x_takes_gradient=True):
    """y, the first gradients and the gradients of a function of them (second order)."""
    xx, ww = tensor(x, x_takes_gradient), tensor(w)
    y = conv(xx, ww)
    cotangent = tensor(rng.standard_normal(y.shape), False)
    wanted = [xx, ww] if x_takes_gradient else [ww]
    first = paddle.grad((y * cotangent).sum() ** 2, wanted, create_graph=True)
    directions = [tensor(rng.standard_normal(g.shape), False) for g in first]
    second = paddle.grad(sum((g * d).sum() + (g * g).sum() for g, d in zip(first, directions)), wanted)
    return [y.numpy()] + [g.numpy() for g in first] + [g.numpy() for g in second]


def assert_close(ours, reference):
    for a, b in zip(ours, reference):
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= TOLERANCE * max(1.0, np.abs(b).max()), np.abs(a - b).max()


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_matches_paddle_conv2d_to_second_order(geometry):
    n, groups, ci, co, size, stride, paddings = geometry
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((n, groups * ci, size, size)), rng.standard_normal((groups * co, ci, 3, 3))
    ours = derivatives(lambda a, b: conv_op.conv2d(a, b, stride, paddings, groups), x, w, np.random.default_rng(1))
    reference = derivatives(lambda a, b: paddle_conv(a, b, stride, paddings, groups), x, w, np.random.default_rng(1))
    assert_close(ours, reference)


@pytest.mark.parametrize("channels_per_group", [1, 3])
def test_data_input_matches_the_unfold_form_to_second_order(channels_per_group):
    """Paddle's conv2d gets these wrong (data input) or cannot do them (one channel per group)."""
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((3, 2 * channels_per_group, 9, 9)), rng.standard_normal((8, channels_per_group, 3, 3))
    for stride, paddings in [(2, (1, 1, 1, 1)), (1, (1, 1, 1, 1))]:
        ours = derivatives(lambda a, b: conv_op.conv2d(a, b, stride, paddings, 2), x, w, np.random.default_rng(3),
                           x_takes_gradient=False)
        reference = derivatives(lambda a, b: unfold_conv(a, b, stride, paddings, 2), x, w, np.random.default_rng(3),
                                x_takes_gradient=False)
        assert_close(ours, reference)


def test_float32_agrees_with_float64():
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((5, 128, 14, 14)), rng.standard_normal((128, 64, 3, 3))
    exact = conv_op.conv2d(tensor(x), tensor(w), 2, (0, 1, 0, 1), 2).numpy()
    single = conv_op.conv2d(tensor(x.astype("float32")), tensor(w.astype("float32")), 2, (0, 1, 0, 1), 2).numpy()
    assert single.dtype == np.float32
    assert np.abs(single - exact).max() < 1e-4 * np.abs(exact).max()


def test_bad_shapes_are_refused_with_a_message():
    with pytest.raises(Exception, match="channels of x and w disagree with groups"):
        conv_op.conv2d(tensor(np.zeros((1, 4, 5, 5))), tensor(np.zeros((4, 3, 3, 3))), 1, (1, 1, 1, 1), 2)


def test_without_a_build_auto_falls_back_with_one_warning(monkeypatch):
    monkeypatch.delenv("FEWSHOT_CONV", raising=False)
    monkeypatch.setattr(conv_op, "_state", {"module": None, "error": None})

    def no_compiler():
        raise RuntimeError("g++: not found")

    monkeypatch.setattr(conv_op, "_compile", no_compiler)
    with pytest.warns(UserWarning, match="g\\+\\+: not found") as warned:
        assert conv_op.resolve("auto") == "paddle"
        assert conv_op.resolve("auto") == "paddle"
    assert len(warned) == 1
    with pytest.raises(RuntimeError, match="could not be built: RuntimeError: g\\+\\+: not found"):
        conv_op.resolve("custom")
    assert conv_op.resolve("paddle") == "paddle"


def test_on_a_gpu_the_network_keeps_paddles_convolution(monkeypatch):
    monkeypatch.delenv("FEWSHOT_CONV", raising=False)
    monkeypatch.setattr(paddle.device, "get_device", lambda: "gpu:0")
    assert conv_op.resolve("auto") == "paddle"
    with pytest.raises(RuntimeError, match="runs on CPU only, not gpu:0"):
        conv_op.resolve("custom")


def test_the_environment_picks_the_form(monkeypatch):
    monkeypatch.setenv("FEWSHOT_CONV", "paddle")
    assert conv_op.resolve("custom") == "paddle"
    monkeypatch.setenv("FEWSHOT_CONV", "cudnn")
    with pytest.raises(ValueError, match="FEWSHOT_CONV / conv form must be one of auto, custom, paddle, got 'cudnn'"):
        conv_op.resolve()


def test_auto_convolution_form_mixes_layers_and_matches_the_paddle_form(monkeypatch):
    """conv='auto' runs the custom operator on small outputs and Paddle's conv2d (and the first
    layer's unfold form) on large ones: at 32 x 32 with max-pooling layers 0-1 are Paddle's and
    2-3 the operator's, and the meta-gradient is the all-Paddle one."""
    sizes = [(32, 32), (16, 16), (8, 8), (4, 4)]  # each max-pool layer's input
    assert [conv_op.use_custom("auto", 1, (1, 1, 1, 1), s) for s in sizes] == [False, False, True, True]
    batch = make_batch(np.random.RandomState(11), size=32)
    gradients = {}
    for form in ("auto", "paddle"):
        monkeypatch.setenv("FEWSHOT_CONV", form)
        net = make_net("maxpool", seed=12)
        assert net.conv_form == form
        gradients[form], _ = project_meta_gradient(net, batch, make_config(False, "maxpool"))
    assert relative_error(gradients["auto"], gradients["paddle"]) < 1e-10
