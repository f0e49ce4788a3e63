"""The torch -> Flax mapping: EDM's names and layouts, and errors naming what does not fit."""

import numpy as np
import pytest

from gaussjax._torch import EDM, INCEPTION, Naming, torch_shapes, variables_from_state_dict, variables_from_torch


def _shapes(**leaves):
    return {"params": leaves}


def test_names_and_layouts():
    state = {
        "model.map_layer0.weight": np.arange(6.0).reshape(3, 2), "model.map_layer0.bias": np.zeros(3),
        "model.enc.8x8_conv.weight": np.arange(2 * 3 * 9.0).reshape(2, 3, 3, 3),
        "model.dec.4x4_up.norm0.weight": np.ones(5), "model.out_norm.bias": np.zeros(5),
    }
    expected = _shapes(net={
        "map_layer0": {"kernel": np.zeros((2, 3)), "bias": np.zeros(3)},
        "enc_8x8_conv": {"kernel": np.zeros((3, 3, 3, 2))},
        "dec_4x4_up": {"norm0": {"scale": np.zeros(5)}},
        "out_norm": {"bias": np.zeros(5)},
    })
    params = variables_from_state_dict(state, expected)["params"]["net"]
    np.testing.assert_array_equal(params["map_layer0"]["kernel"], np.arange(6.0).reshape(3, 2).T)
    kernel = params["enc_8x8_conv"]["kernel"]
    assert kernel.dtype == np.float32
    # (out, in, kh, kw) -> (kh, kw, in, out)
    assert kernel[1, 2, 0, 1] == state["model.enc.8x8_conv.weight"][1, 0, 1, 2]
    np.testing.assert_array_equal(params["dec_4x4_up"]["norm0"]["scale"], np.ones(5))


def test_edm_names():
    expected = _shapes(net={"enc_32x32_block0": {"conv0": {"kernel": np.zeros((3, 3, 2, 4))}},
                            "dec_8x8_in0": {"norm2": {"scale": np.zeros(5)}},
                            "map_label": {"kernel": np.zeros((6, 7)), "bias": np.zeros(7)}})
    assert torch_shapes(expected, EDM) == {"model.enc.32x32_block0.conv0.weight": (4, 2, 3, 3),
                                           "model.dec.8x8_in0.norm2.weight": (5,),
                                           "model.map_label.weight": (7, 6), "model.map_label.bias": (7,)}
    bare = _shapes(enc_32x32_block0={"conv0": {"bias": np.zeros(4)}})  # a network without a preconditioner
    assert list(torch_shapes(bare, EDM)) == ["enc.32x32_block0.conv0.bias"]


def test_flax_variables_without_a_torch_name_are_refused():
    with pytest.raises(ValueError, match="Flax variable params/layer/embedding has no torch counterpart"):
        torch_shapes(_shapes(layer={"embedding": np.zeros(3)}), EDM)
    with pytest.raises(ValueError, match=r"params/norm/kernel and params/norm/scale are both the torch entry "
                                         r"norm\.weight"):
        torch_shapes(_shapes(norm={"kernel": np.zeros((2, 2)), "scale": np.zeros(2)}), EDM)


def test_errors_name_what_does_not_fit():
    expected = _shapes(layer={"kernel": np.zeros((2, 3)), "bias": np.zeros(3)})
    with pytest.raises(ValueError, match=r"^the state dict does not hold the network's weights: entries with no "
                                         r"gaussjax variable: other\.weight, model\.map_noise\.freqs$"):
        variables_from_state_dict({"layer.weight": np.zeros((3, 2)), "layer.bias": np.zeros(3),
                                   "other.weight": np.zeros((3, 2)), "model.map_noise.freqs": np.zeros(3)}, expected)
    with pytest.raises(ValueError, match=r"missing entries: layer\.bias$"):
        variables_from_state_dict({"layer.weight": np.zeros((3, 2))}, expected)
    with pytest.raises(ValueError, match=r"differ: layer\.weight \(2, 3\), expected \(3, 2\)$"):
        variables_from_state_dict({"layer.weight": np.zeros((2, 3)), "layer.bias": np.zeros(3)}, expected)
    with pytest.raises(ValueError, match=r"not float arrays: layer\.bias \(int64\)$"):
        variables_from_state_dict({"layer.weight": np.zeros((3, 2)), "layer.bias": np.zeros(3, np.int64)}, expected)


def test_non_finite_entries_are_named():
    """D8: NaN or infinite weights (also float64 values past float32's range) are refused, naming the entry."""
    expected = _shapes(layer={"kernel": np.zeros((2, 3)), "bias": np.zeros(3)}, norm={"scale": np.zeros(3)})
    state = {"layer.weight": np.zeros((3, 2)), "layer.bias": np.array([0.0, np.nan, 1.0]),
             "norm.weight": np.array([1.0, 1e39, 1.0])}
    with pytest.raises(ValueError, match=r"NaN or infinite values: layer\.bias, norm\.weight$"):
        variables_from_state_dict(state, expected)


def test_an_entry_is_converted_only_once_its_shape_fits():
    """D5: a stride-0 view standing for 2^60 elements is refused by its shape, not converted."""
    huge = np.lib.stride_tricks.as_strided(np.zeros(1, np.float16), (2**30, 2**30), (0, 0))
    expected = _shapes(layer={"kernel": np.zeros((2, 3))})
    with pytest.raises(ValueError, match=r"layer\.weight \(1073741824, 1073741824\)"):
        variables_from_state_dict({"layer.weight": huge}, expected)


def test_one_mapping_with_each_family_s_names():
    """Inception's names pass through unchanged; its counters and classifier are skipped; its variances checked."""
    expected = {"params": {"b": {"conv": {"kernel": np.zeros((1, 1, 2, 3))}, "bn": {"scale": np.zeros(3)}}},
                "batch_stats": {"b": {"bn": {"mean": np.zeros(3), "var": np.zeros(3)}}}}
    state = {"b.conv.weight": np.ones((3, 2, 1, 1), np.float16), "b.bn.weight": np.ones(3),
             "b.bn.running_mean": np.zeros(3), "b.bn.running_var": np.ones(3), "b.bn.num_batches_tracked": np.array(7),
             "fc.weight": np.ones((2, 2))}
    variables = variables_from_torch(state, expected, INCEPTION)
    assert variables["params"]["b"]["conv"]["kernel"].shape == (1, 1, 2, 3)
    np.testing.assert_array_equal(variables["batch_stats"]["b"]["bn"]["var"], np.ones(3, np.float32))
    state["b.bn.running_var"] = -np.ones(3)
    with pytest.raises(ValueError, match=r"^'x.pth' does not hold FID's Inception weights: running variances with "
                                         r"negative values: b\.bn\.running_var$"):
        variables_from_torch(state, expected, INCEPTION, source="'x.pth'")
    renamed = Naming("the toy's weights", "toy", lambda modules: ("body", *modules))
    assert list(torch_shapes(expected, renamed)) == ["body.b.bn.running_mean", "body.b.bn.running_var",
                                                     "body.b.bn.weight", "body.b.conv.weight"]
