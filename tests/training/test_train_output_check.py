import pytest
import torch

from lesionseg.errors import LesionsegError
from lesionseg.training.trainer import as_float, check_output_matches_target


@pytest.mark.parametrize(
    "logits,target",
    [
        ((2, 3, 9, 9, 9), (2, 9, 9, 9)),  # dense 3D (DeepMedic)
        ((2, 1, 16, 16), (2, 1, 16, 16)),  # sigmoid 2D with channel axis (D-UNet)
        ((2, 2), (2,)),  # patch classifier (MSSEG cascade, MUSCLE)
    ],
)
def test_matching_outputs_pass(logits, target):
    check_output_matches_target(torch.zeros(logits), torch.zeros(target), "stages[0]")


@pytest.mark.parametrize(
    "logits,target",
    [((2, 3, 9, 9, 9), (2, 7, 7, 7)), ((2, 2), (2, 15, 15, 15)), ((4, 2), (2,))],
)
def test_mismatching_outputs_fail_clearly(logits, target):
    with pytest.raises(LesionsegError, match="does not match the sampler's target"):
        check_output_matches_target(torch.zeros(logits), torch.zeros(target), "stages[0]")


def test_several_heads_are_checked_on_the_first_and_cast_together():
    heads = (torch.zeros(2, 2, 8, 8, dtype=torch.float16), torch.zeros(2, 2, 4, 4))
    check_output_matches_target(heads, torch.zeros(2, 8, 8), "stages[0]")
    with pytest.raises(LesionsegError):
        check_output_matches_target(heads[::-1], torch.zeros(2, 8, 8), "stages[0]")
    assert all(h.dtype == torch.float32 for h in as_float(heads))
