import pytest

from gaussjax.data import DATASETS, load_dataset


def test_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match="`name` must be one of .*'digits'.*'cifar10'"):
        load_dataset("imagenet")


def test_unknown_split():
    with pytest.raises(ValueError, match="`split` must be one of 'train', 'test', 'all'"):
        load_dataset("digits", split="validation")


def test_every_name_is_documented():
    doc = load_dataset.__doc__
    assert all(f'"{name}"' in doc for name in DATASETS)


def test_unknown_option_is_an_error():
    with pytest.raises(TypeError, match="pad_to"):
        load_dataset("digits", pad_to=32)
