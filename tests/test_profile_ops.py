"""benchmarks/profile_ops.py's attribution: self times of nested profiler events,
and the operator groups of both frameworks' names."""
from benchmarks.profile_ops import group_of, self_times


def test_nested_events_keep_only_their_own_time():
    # (begin, duration, thread, name): a step holding a backward node holding a kernel; another thread apart
    events = [(0, 100, "1", "step"), (10, 50, "1", "Global_MultiplyGradNode"), (20, 30, "1", "multiply_grad"),
              (70, 20, "1", "conv2d"), (0, 40, "2", "step")]
    times = self_times(events)
    assert times == {"step": 100 - 50 - 20 + 40, "Global_MultiplyGradNode": 20, "multiply_grad": 30, "conv2d": 20}
    assert sum(times.values()) == 100 + 40  # every microsecond counted once


def test_operator_names_of_both_frameworks_fall_in_their_groups():
    assert group_of("fewshot_conv2d") == group_of("conv2d") == group_of("aten::mkldnn_convolution") == "conv forward"
    assert group_of("Global_CustomOpGradNode: fewshot_conv2d_grad") == "conv gradient"
    assert group_of("aten::convolution_backward") == group_of("conv2d_grad") == "conv gradient"
    assert group_of("Global_RunCustomOpDoubleGradNode: fewshot_conv2d_grad_grad") == "conv double gradient"
    assert group_of("conv2d_grad_grad") == "conv double gradient"
    assert group_of("multiply_grad") == group_of("aten::mul") == group_of("rsqrt") == "elementwise"
    assert group_of("matmul_grad") == group_of("aten::bmm") == group_of("aten::mm") == "matmul"
    assert group_of("reshape") == group_of("Gradient Backward") == "other"
