"""EPIG: the expected information gain about the predictions on target inputs (Bickford Smith et al. 2023).

Prediction-oriented Bayesian active learning (arXiv 2304.08151). BALD scores the information a label
y carries about the parameters; EPIG scores what it carries about the labels y* of target inputs x*
drawn from where the model will be used:

    EPIG(x) = E_{x*} I[y; y* | x, x*] = E_{x*} Σ_{y,y*} p(y, y*) log( p(y, y*) / (p(y) p(y*)) ),

with the joint predictive p(y, y*) = 1/K Σ_k p_k(y | x) p_k(y* | x*) over K *paired* samples of the
model (sample k is the same model for the pool input and every target: the K rows of both tensors
must come from the same dropout masks, or the same ensemble members) and p(y) = 1/K Σ_k p_k(y | x).
An input whose prediction does not move with the targets' predictions scores 0 however uncertain it
is: the "uncertain but irrelevant" input BALD is drawn to. Which inputs are relevant is the targets' say.

Computed from log-probabilities with the log-sum-exp shift moved out of a matmul: with
a_k(y) = log p_k(y | x), A(y) = max_k a_k(y) and P_k(y) = exp(a_k(y) − A(y)) ∈ [0, 1] (the same for
the targets, B and Q), the joint is exp(A(y) + B(y*)) · 1/K Σ_k P_k(y) Q_k(y*), and A, B cancel in the
pointwise mutual information log p(y, y*) − log p(y) − log p(y*). So the K-sum is one matmul of
numbers in [0, 1] that never overflow, the marginals' sums are ≥ 1/K, and a joint that underflows to 0
contributes 0 (its limit, p log p → 0), never NaN. Cost: K × N × T × C² multiply-adds.
"""
from __future__ import annotations

import torch

# Bound on one pool chunk's N_chunk × C × T × C temporaries (about EPIG_TEMP_COPIES of them alive at once).
DEFAULT_CHUNK_BYTES = 64 * 2**20
EPIG_TEMP_COPIES = 3


def epig(log_probs_K_N_C: torch.Tensor, log_probs_K_T_C: torch.Tensor,
         chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> torch.Tensor:
    """scores_N: EPIG of each pool input, averaged over the T targets, in nats (≥ 0; tiny negative round-off
    is clamped to 0). Row k of both tensors must be the same sample of the model. The pool goes in chunks
    whose C × T × C temporaries stay within ``chunk_bytes`` (at least one input a chunk)."""
    if log_probs_K_N_C.dim() != 3 or log_probs_K_T_C.dim() != 3:
        raise ValueError(f"expected K × N × C and K × T × C log-probabilities, got shapes "
                         f"{tuple(log_probs_K_N_C.shape)} and {tuple(log_probs_K_T_C.shape)}")
    k, n, c = log_probs_K_N_C.shape
    if log_probs_K_T_C.shape[0] != k or log_probs_K_T_C.shape[2] != c:
        raise ValueError(f"pool ({k} × {n} × {c}) and targets {tuple(log_probs_K_T_C.shape)} must share K and C")
    t = log_probs_K_T_C.shape[1]
    if t == 0:
        raise ValueError("EPIG needs at least one target input")
    for name, lp in (("pool", log_probs_K_N_C), ("target", log_probs_K_T_C)):
        if (torch.isnan(lp) | (lp == float("inf"))).any():  # −inf (a probability of 0) is valid
            raise ValueError(f"EPIG: the {name} log-probabilities are NaN or +inf: the model is invalid (diverged?)")
    log_probs_K_T_C = log_probs_K_T_C.to(log_probs_K_N_C)
    q_K_TC, shift_TC = _scaled(log_probs_K_T_C.reshape(k, t * c))
    rows = max(1, chunk_bytes // (EPIG_TEMP_COPIES * c * t * c * log_probs_K_N_C.element_size()))
    scores_N = torch.empty(n, dtype=log_probs_K_N_C.dtype, device=log_probs_K_N_C.device)
    for start in range(0, n, rows):
        lp_K_n_C = log_probs_K_N_C[:, start:start + rows]
        scores_N[start:start + rows] = _epig_chunk(lp_K_n_C, q_K_TC, shift_TC, t)
    return scores_N.clamp_min_(0.0)


def _scaled(log_probs_K_M: torch.Tensor) -> tuple:
    """(P_K_M, shift_M): P_k = exp(a_k − shift), shift = max_k a_k (0 where every a_k is −inf, so P = 0
    there and nothing is NaN); a_k = shift + log P_k."""
    shift_M = log_probs_K_M.amax(0).nan_to_num(neginf=0.0)
    return (log_probs_K_M - shift_M).exp(), shift_M


def _epig_chunk(lp_K_n_C: torch.Tensor, q_K_TC: torch.Tensor, shift_TC: torch.Tensor, t: int) -> torch.Tensor:
    """EPIG of n pool inputs against T targets given as scaled probabilities Q (K × T·C) and their shifts."""
    k, n, c = lp_K_n_C.shape
    p_K_nC, shift_nC = _scaled(lp_K_n_C.reshape(k, n * c))
    # Scaled joint 1/K Σ_k P_k(y) Q_k(y*): (n·C) × (T·C), the K-sum as one matmul
    joint_nC_TC = (p_K_nC.T @ q_K_TC).div_(k)
    # Scaled marginals 1/K Σ_k P_k (each ≥ 1/K where the class is possible at all)
    log_py_nC = p_K_nC.mean(0).log()
    log_pt_TC = q_K_TC.mean(0).log()
    # Pointwise mutual information: the shifts cancel
    log_joint = joint_nC_TC.log_()
    pmi = log_joint - log_py_nC[:, None] - log_pt_TC[None, :]
    # The joint itself, exp(shift(y) + shift(y*)) × scaled joint, in place. Where it is 0 its term is 0 by
    # definition (0 × log 0); only those terms are set, so that any other NaN stays visible.
    joint = log_joint.add_(shift_nC[:, None]).add_(shift_TC[None, :]).exp_()
    impossible = joint == 0
    terms = joint.mul_(pmi).masked_fill_(impossible, 0.0)
    # Σ over y and y*, then the mean over the T targets
    return terms.view(n, c, t, c).sum(dim=(1, 3)).mean(1)


def epig_row_bytes(num_targets: int, num_classes: int, itemsize: int = 4) -> int:
    """Bytes one pool input's temporaries take inside ``epig`` (for planning memory before a run)."""
    return EPIG_TEMP_COPIES * num_classes * num_targets * num_classes * itemsize

