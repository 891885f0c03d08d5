import numpy as np
import pytest
import torch

from edgec.ops import distillation
from edgec.parity import metrics


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


MASK = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])  # (batch 2, seq 5): the second row has 2 padding tokens


def test_logits_kl_zero_when_equal_positive_otherwise_and_matches_numpy():
    teacher, student = _randn(4, 3), _randn(4, 3, seed=1)
    assert distillation.logits_kl(teacher, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-7)
    reference = metrics.mean_kl(teacher.numpy(), student.numpy())
    assert distillation.logits_kl(student, teacher, 1.0).item() == pytest.approx(reference, rel=1e-5)
    # T^2 times the KL of the softened distributions
    softened = metrics.mean_kl(teacher.numpy() / 3.0, student.numpy() / 3.0)
    assert distillation.logits_kl(student, teacher, 3.0).item() == pytest.approx(9.0 * softened, rel=1e-5)


def test_token_logits_kl_ignores_padding():
    teacher = _randn(2, 5, 4)
    student = teacher.clone()
    student[1, 3:] = 100.0 * _randn(2, 4, seed=2)  # garbage only where the mask is 0
    assert distillation.logits_kl(student, teacher, 2.0, MASK).item() == pytest.approx(0.0, abs=1e-7)
    assert distillation.logits_kl(student, teacher, 2.0).item() > 0.1  # unmasked, the garbage counts
    student[0, 0] += torch.tensor([5.0, 0.0, 0.0, 0.0])
    assert distillation.logits_kl(student, teacher, 2.0, MASK).item() > 0


def test_span_kl_masks_padding_positions():
    teacher = _randn(2, 5)
    student = teacher.clone()
    student[1, 3:] = torch.tensor([50.0, -50.0])  # would take all the mass if padding counted
    assert distillation.span_kl(student, teacher, MASK, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    student[0, 2] += 3.0
    assert distillation.span_kl(student, teacher, MASK, 2.0).item() > 0.01


def test_embedding_loss():
    teacher = _randn(4, 8)
    assert distillation.embedding_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)
    # same direction, other length: only the MSE part is left
    mse = (teacher**2).mean().item()
    assert distillation.embedding_loss(2 * teacher, teacher).item() == pytest.approx(mse, rel=1e-5)
    assert distillation.embedding_loss(-teacher, teacher).item() > 2.0  # 1 - cos = 2, plus MSE


def test_hidden_state_loss_scale_free_and_masked():
    teacher = [_randn(2, 5, 6, seed=s) for s in range(2)]  # two paired layers
    assert distillation.hidden_state_loss(teacher, teacher, MASK).item() == pytest.approx(0.0, abs=1e-7)
    student = [t.clone() for t in teacher]
    student[1][1, 3:] = 1e3  # padding tokens are not compared
    assert distillation.hidden_state_loss(student, teacher, MASK).item() == pytest.approx(0.0, abs=1e-7)
    student[0] = 0.5 * teacher[0]
    loss = distillation.hidden_state_loss(student, teacher, MASK).item()
    assert loss == pytest.approx(0.25 / 2, rel=1e-5)  # layer 0: 0.25 of its energy, layer 1: 0; mean of two
    scaled = distillation.hidden_state_loss([10 * s for s in student], [10 * t for t in teacher], MASK).item()
    assert scaled == pytest.approx(loss, rel=1e-5)
    with pytest.raises(ValueError, match="in pairs"):
        distillation.hidden_state_loss(student[:1], teacher, MASK)


def test_teacher_layers_evenly_spaced_and_end_at_the_last():
    assert distillation.teacher_layers(12, 4) == (3, 6, 9, 12)
    assert distillation.teacher_layers(12, 1) == (12,)
    assert distillation.teacher_layers(6, 4) == (2, 3, 4, 6)
    assert distillation.teacher_layers(2, 4) == (1, 2)


def test_layer_pairs_follow_the_kept_layers_origins():
    assert distillation.layer_pairs(range(12), (3, 6, 9, 12)) == [(3, 3), (6, 6), (9, 9), (12, 12)]
    # kept teacher layers 0, 5, 11: teacher state 6 (after layer 5) is student state 2 (after its layer 1 = teacher 5);
    # teacher 9 would pair with the same student state but is farther from it, teacher 3 pairs with student 1
    assert distillation.layer_pairs([0, 5, 11], (3, 6, 9, 12)) == [(1, 3), (2, 6), (3, 12)]
    assert distillation.layer_pairs([4, 5], (3, 6)) == [(2, 6)]  # nothing kept before teacher state 3


def test_similarity_loss_needs_no_common_width():
    teacher = _randn(4, 8)
    assert distillation.similarity_loss(teacher[:, :8], teacher).item() == pytest.approx(0.0, abs=1e-7)
    assert distillation.similarity_loss(2 * teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)  # scale-free
    assert distillation.similarity_loss(_randn(4, 3, seed=5), teacher).item() > 0.01


def test_labels_mix_with_the_teacher_loss():
    logits, labels = torch.tensor([[4.0, 0.0], [0.0, 4.0]]), torch.tensor([0, 0])
    teacher_loss = torch.tensor(0.3)
    ce = torch.nn.functional.cross_entropy(logits, labels).item()
    assert distillation.with_labels(teacher_loss, logits, labels, 0.0).item() == pytest.approx(0.3)
    assert distillation.with_labels(teacher_loss, logits, labels, 0.25).item() == pytest.approx(0.75 * 0.3 + 0.25 * ce)


@pytest.mark.parametrize(
    "task, shapes",
    [
        ("feature-extraction", [(2, 6)]),
        ("sequence-classification", [(2, 3)]),
        ("token-classification", [(2, 5, 3)]),
        ("question-answering", [(2, 5), (2, 5)]),
    ],
)
def test_output_loss_gradients_flow_and_stay_finite(task, shapes):
    teacher = [_randn(*s, seed=i) for i, s in enumerate(shapes)]
    student = [_randn(*s, seed=10 + i).requires_grad_() for i, s in enumerate(shapes)]
    loss = distillation.output_loss(task, student, teacher, MASK, 2.0)
    loss.backward()
    assert loss.item() > 0
    for tensor in student:
        assert torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0
    if task in ("token-classification", "question-answering"):
        assert np.allclose(student[0].grad[1, 3:].numpy(), 0.0)  # padding gets no gradient
    assert distillation.output_loss(task, teacher, teacher, MASK, 2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_hidden_state_loss_gradient_flows_but_not_from_padding():
    teacher = [_randn(2, 5, 6, seed=s) for s in range(2)]
    student = [_randn(2, 5, 6, seed=10 + s).requires_grad_() for s in range(2)]
    distillation.hidden_state_loss(student, teacher, MASK).backward()
    assert student[0].grad.abs().sum() > 0 and torch.isfinite(student[1].grad).all()
    assert student[1].grad[1, 3:].abs().sum() == 0


def test_output_loss_unknown_task():
    with pytest.raises(ValueError, match="no distillation loss"):
        distillation.output_loss("translation", [torch.zeros(1)], [torch.zeros(1)], MASK, 1.0)
