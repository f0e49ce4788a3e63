"""The state-dict -> Flax mapping rule: names, layouts, and errors naming what does not fit."""

import numpy as np
import pytest

from gaussjax.nn._torch_state import flax_path, variables_from_state_dict


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


def test_paths():
    assert flax_path("enc.32x32_block0.conv0.weight") == ("enc_32x32_block0", "conv0", "kernel")
    assert flax_path("model.dec.8x8_in0.norm2.weight") == ("net", "dec_8x8_in0", "norm2", "scale")
    assert flax_path("model.map_label.bias") == ("net", "map_label", "bias")
    with pytest.raises(ValueError, match="freqs"):
        flax_path("model.map_noise.freqs")


def test_errors_name_what_does_not_fit():
    expected = _shapes(layer={"kernel": np.zeros((2, 3)), "bias": np.zeros(3)})
    with pytest.raises(ValueError, match=r"no gaussjax parameter: other\.weight"):
        variables_from_state_dict({"layer.weight": np.zeros((3, 2)), "layer.bias": np.zeros(3),
                                   "other.weight": np.zeros((3, 2))}, expected)
    with pytest.raises(ValueError, match="lacks: layer/bias"):
        variables_from_state_dict({"layer.weight": np.zeros((3, 2))}, expected)
    shape_error = r"differ: layer\.weight \(2, 3\) as layer/kernel \(3, 2\), expected \(2, 3\)$"
    with pytest.raises(ValueError, match=shape_error):
        variables_from_state_dict({"layer.weight": np.zeros((2, 3)), "layer.bias": np.zeros(3)}, expected)


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
