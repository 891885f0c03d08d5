"""Distillation losses: how far a student's outputs and hidden states are from a fixed teacher's.

Every loss is computed in fp32 whatever dtype the forward passes ran in (bf16 autocast), and is zero
exactly when the student reproduces the teacher.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

# A logit softmax turns into exactly zero probability that is still finite, so the KL term
# p * (log p - log q) of a padding position is 0 * finite = 0 rather than 0 * inf = nan.
_MASKED_LOGIT = -1e9


def logits_kl(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) * T^2, averaged over rows.

    student, teacher: (batch, classes), or (batch, seq, classes) with `mask` (batch, seq) marking the
    real tokens, over which alone the mean is taken. The T^2 keeps the gradient's size independent of
    the temperature (Hinton et al., 2015).
    """
    student_log = F.log_softmax(student.float() / temperature, dim=-1)
    teacher_log = F.log_softmax(teacher.float() / temperature, dim=-1)
    per_row = F.kl_div(student_log, teacher_log, log_target=True, reduction="none").sum(-1)  # (batch[, seq])
    return _masked_mean(per_row, mask) * temperature**2


def span_kl(
    student: torch.Tensor, teacher: torch.Tensor, attention_mask: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Question answering: KL over positions of start (or end) logits, (batch, seq); padding gets no mass."""
    padding = attention_mask == 0
    student = (student.float() / temperature).masked_fill(padding, _MASKED_LOGIT)
    teacher = (teacher.float() / temperature).masked_fill(padding, _MASKED_LOGIT)
    return logits_kl(student, teacher, 1.0) * temperature**2


def embedding_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """(1 - cosine) + MSE of pooled sentence embeddings, (batch, hidden).

    Cosine is what embedding parity and retrieval measure; the MSE also pins the length, which
    cosine ignores and an unnormalized model's users may still see.
    """
    student, teacher = student.float(), teacher.float()
    cosine = F.cosine_similarity(student, teacher, dim=-1, eps=1e-12)
    return (1.0 - cosine).mean() + F.mse_loss(student, teacher)


def similarity_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MSE between the in-batch cosine similarity matrices, (batch, batch), of two sets of embeddings.

    It needs no common width: a student whose hidden size was pruned still learns the teacher's similarity
    structure, which is what STS and retrieval measure.
    """
    student, teacher = F.normalize(student.float(), dim=-1), F.normalize(teacher.float(), dim=-1)
    return F.mse_loss(student @ student.T, teacher @ teacher.T)


def output_loss(
    task: str,
    student: Sequence[torch.Tensor],
    teacher: Sequence[torch.Tensor],
    attention_mask: torch.Tensor,
    temperature: float,
    channels: torch.Tensor | None = None,
) -> torch.Tensor:
    """The loss on a task's outputs, as TaskModule returns them.

    feature-extraction: (embedding,); sequence- and token-classification: (logits,);
    question-answering: (start_logits, end_logits). attention_mask is (batch, seq). `channels` (the teacher
    channels a hidden-pruned student kept) compares an embedding on those channels, plus the similarity
    structure of the full teacher's.
    """
    if task == "feature-extraction":
        if channels is None:
            return embedding_loss(student[0], teacher[0])
        return embedding_loss(student[0], teacher[0][:, channels]) + similarity_loss(student[0], teacher[0])
    if task == "question-answering":
        start = span_kl(student[0], teacher[0], attention_mask, temperature)
        end = span_kl(student[1], teacher[1], attention_mask, temperature)
        return (start + end) / 2
    if task == "sequence-classification":
        return logits_kl(student[0], teacher[0], temperature)
    if task == "token-classification":
        return logits_kl(student[0], teacher[0], temperature, attention_mask)
    raise ValueError(f"no distillation loss for task {task!r}")


def with_labels(teacher_loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, weight: float) -> torch.Tensor:
    """(1 - weight) x the teacher's loss + weight x cross-entropy on the true classes, logits (batch, classes)."""
    return (1.0 - weight) * teacher_loss + weight * F.cross_entropy(logits.float(), labels)


def hidden_state_loss(
    student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor], attention_mask: torch.Tensor
) -> torch.Tensor:
    """Mean over paired states of MSE(student, teacher) / mean(teacher^2), over real tokens only.

    student[i] and teacher[i] are (batch, seq, hidden) states at the same depth (see `layer_pairs`). Dividing by the
    teacher's energy makes every layer count the same whatever its activation scale, and the loss independent of
    the model's.
    """
    if len(student) != len(teacher) or not student:
        raise ValueError(f"got {len(student)} student and {len(teacher)} teacher hidden states; pass them in pairs")
    mask = attention_mask.unsqueeze(-1).float()  # (batch, seq, 1): padding contributes nothing
    ratios = []
    for student_layer, teacher_layer in zip(student, teacher):
        teacher_layer = teacher_layer.float()
        error = ((student_layer.float() - teacher_layer) ** 2 * mask).sum()
        energy = (teacher_layer**2 * mask).sum()
        ratios.append(error / energy.clamp_min(1e-12))  # the token and hidden counts cancel
    return torch.stack(ratios).mean()


def teacher_layers(layers: int, count: int) -> tuple[int, ...]:
    """Hidden-state indices (1..layers: the output of layer i - 1) of `count` evenly spaced teacher layers, the last
    always among them. Index 0, the embedding output, is never one: it starts equal to the teacher's."""
    count = max(1, min(count, layers))
    return tuple(sorted({round(k * layers / count) for k in range(1, count + 1)}))


def layer_pairs(origins: Sequence[int], targets: Sequence[int]) -> list[tuple[int, int]]:
    """(student hidden-state index, teacher hidden-state index) pairs at the same depth.

    origins[j] is the teacher layer (0-based) that student layer j was, so a student with removed layers still
    pairs up: teacher state t (the output of teacher layer t - 1) is matched by the output of the last kept layer at
    or before t - 1, where a removed layer passes its input on unchanged. Each student state keeps only the
    closest teacher state, and a target before the first kept layer (nothing but embeddings) is dropped.
    """
    best: dict[int, int] = {}
    for target in targets:
        below = [j for j, origin in enumerate(origins) if origin <= target - 1]
        if not below:
            continue
        student = below[-1] + 1
        if student not in best or target - origins[student - 1] < best[student] - origins[student - 1]:
            best[student] = target
    return sorted(best.items())


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)
