"""The linear algebra of refusal directions: the ridge solve, separation units, and prompt/answer mixing.

- :func:`ridge_solve`: ``(Σ + λI)⁻¹ v`` in float64 by Cholesky, never an explicit inverse (RMD / WRMD);
- :func:`separation_units`: a direction as ``s·u``, ``u`` its unit vector and ``s = u·(μ_r − μ_c)`` the classes' mean
  separation along it;
- :func:`mix_directions`: one steering vector from a prompt-token and an answer-token direction.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from steering_adapter.directions.labels import ArrayLike


def as_matrix(X: ArrayLike, name: str = "X") -> torch.Tensor:
    """Activations as a checked float64 matrix.

    Args:
        X: ``[n_samples, hidden_size]`` (torch or numpy, any real dtype).
        name: the argument's name, for error messages.

    Returns:
        float64 ``[n_samples, hidden_size]``, on ``X``'s device for a tensor.

    Raises:
        ValueError: for another number of dimensions, complex or bool values, or non-finite values.
    """
    tensor = X if isinstance(X, torch.Tensor) else torch.as_tensor(np.asarray(X))
    tensor = tensor.detach()
    if tensor.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [n_samples, hidden_size], got shape {tuple(tensor.shape)}")
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise ValueError(f"{name} must hold real numbers, got dtype {tensor.dtype}")
    tensor = tensor.to(torch.float64)
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return tensor


def ridge_solve(covariance: torch.Tensor, ridge_lambda: float, rhs: torch.Tensor) -> torch.Tensor:
    """Solve ``(Σ + λI) v = rhs`` in float64 by Cholesky (LU fallback if the factorisation fails numerically).

    Args:
        covariance: symmetric positive semi-definite ``[d, d]``.
        ridge_lambda: ``λ > 0``.
        rhs: ``[d]``.

    Returns:
        float64 ``[d]``, on the covariance's device.
    """
    if not (math.isfinite(ridge_lambda) and ridge_lambda > 0):
        raise ValueError(f"the ridge λ must be a finite number > 0, got {ridge_lambda}")
    system = covariance.to(torch.float64).clone()
    system.diagonal().add_(ridge_lambda)
    rhs = rhs.to(device=system.device, dtype=torch.float64)[:, None]
    factor, info = torch.linalg.cholesky_ex(system)
    if int(info) == 0:
        solution = torch.cholesky_solve(rhs, factor)
    else:  # numerically indefinite (λ tiny next to the covariance scale): fall back to LU
        del factor
        solution = torch.linalg.solve(system, rhs)
    solution = solution[:, 0]
    if not torch.isfinite(solution).all():
        raise ValueError(f"the ridge system is singular for λ={ridge_lambda}; use a larger ridge_lambda")
    return solution


def separation_units(direction: torch.Tensor, difference: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The unit direction ``u`` and the classes' mean separation along it, ``s = u·(μ_r − μ_c)``.

    Args:
        direction: ``[d]``, any estimator's direction (MD, RMD, WRMD).
        difference: ``[d]``, ``μ_r − μ_c`` (the means the estimator used).

    Returns:
        ``(u, s)``: float64 ``[d]`` of norm 1, and the float ``s``; ``s·u`` is the direction in separation units.

    Raises:
        ValueError: when the direction is zero (the class means coincide) or not finite, or when ``s <= 0`` (the
            direction does not point from the compliance mean towards the refusal mean).
    """
    direction = direction.to(torch.float64)
    norm = float(torch.linalg.vector_norm(direction))
    if not (math.isfinite(norm) and norm > 0):
        raise ValueError(
            f"the direction has norm {norm}: the refusal and compliance means coincide, so there is no direction"
        )
    unit = direction / norm
    separation = float(unit @ difference.to(device=unit.device, dtype=torch.float64))
    if not separation > 0:
        raise ValueError(
            f"the classes' mean separation along the direction is {separation:.3g} (must be > 0): the direction does "
            "not point from the compliance mean towards the refusal mean"
        )
    return unit, separation


def mix_directions(
    prompt_direction: ArrayLike, answer_direction: ArrayLike, difference: ArrayLike, answer_scale: float
) -> torch.Tensor:
    """One steering vector from a direction fitted at prompt tokens and one fitted at answer tokens.

    A steering vector is added at every position, the prompt's tokens and the generated ones. A direction fitted on
    prompt activations reads the refusal where the model decides it; one fitted on the model's own answer tokens
    (``position="answer"``) reads how a refusal goes on being written. The two can be close to orthogonal (on the
    censored SmolLM2, cosine 0.02–0.07), so the first alone pushes generated tokens away from a refusal only
    indirectly. The result is the prompt direction in separation units plus a push of ``ρ`` times its length along
    the answer direction: ``s·(û_p + ρ·û_a)`` with ``s = û_p·(μ_r − μ_c)``, so ``α = −1`` still moves the refused
    prompts' mean onto the complied prompts' mean along ``û_p``.

    Args:
        prompt_direction: ``[d]``, the direction at prompt tokens (any norm).
        answer_direction: ``[d]``, the direction at answer tokens (any norm).
        difference: ``[d]``, ``μ_r − μ_c`` of the prompt activations (the unit of the result).
        answer_scale: ``ρ >= 0``; ``0`` gives the prompt direction in separation units.

    Returns:
        float32 ``[d]``.

    Raises:
        ValueError: ``ρ`` negative or not finite, mismatched sizes, a zero or non-finite direction, or a prompt
            direction along which the refused prompts do not lie beyond the complied ones (``s <= 0``).
    """
    rho = float(answer_scale)
    if not (math.isfinite(rho) and rho >= 0):
        raise ValueError(f"answer_scale must be a finite number >= 0, got {answer_scale!r}")
    vectors = [
        as_matrix(
            (v.detach().cpu() if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v))).reshape(1, -1), name
        )[0]
        for v, name in (
            (prompt_direction, "prompt_direction"),
            (answer_direction, "answer_direction"),
            (difference, "difference"),
        )
    ]
    prompt, answer, diff = vectors
    if not prompt.shape == answer.shape == diff.shape:
        raise ValueError(
            f"prompt_direction, answer_direction and difference differ in size: {prompt.shape[0]}, {answer.shape[0]}, "
            f"{diff.shape[0]}"
        )
    unit, separation = separation_units(prompt, diff)
    answer_norm = torch.linalg.vector_norm(answer)
    if answer_norm == 0:
        raise ValueError("answer_direction is zero")
    return (separation * (unit + rho * answer / answer_norm)).to(torch.float32)
