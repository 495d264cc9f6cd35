"""An independent float64 NumPy implementation of LEO's meta-objective (the
authors' model.py), for tests: the inner gradients with respect to the latents
and the classifier weights are derived by hand here, with no automatic
differentiation, so central differences of this objective are a meta-gradient
that shares nothing with Paddle's double-gradient kernels."""
import numpy as np

FLOOR = 1e-10


def relu(x):
    return np.maximum(x, 0.0)


def split(a):
    half = a.shape[-1] // 2
    return a[..., :half], a[..., half:]


def summed_ce_and_weight_grad(x, y, w):
    """Cross-entropy summed over the rows of X (labels Y) with logits x . mean_k w[:, k];
    its gradient with respect to w [N, K, D]."""
    k = w.shape[1]
    logits = x @ w.mean(axis=1).T
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_z = np.log(np.exp(shifted).sum(axis=1))
    loss = (log_z - shifted[np.arange(len(y)), y]).sum()
    probs = np.exp(shifted - log_z[:, None])
    probs[np.arange(len(y)), y] -= 1.0
    grad_mean = probs.T @ x  # [N, D]
    return loss, np.repeat(grad_mean[:, None, :] / k, k, axis=1)


def decode(z, wd, eps, offset):
    """Weights and what their gradient back to z needs."""
    mean, raw = split(z @ wd)
    ex = np.exp(raw)
    std = ex - (1.0 - offset)
    above = std > FLOOR
    return mean + np.where(above, std, FLOOR) * eps, (ex, above, eps)


def latent_grad(grad_w, cache, wd):
    ex, above, eps = cache
    grad_raw = grad_w * eps * ex * above
    return np.concatenate([grad_w, grad_raw], axis=-1) @ wd.T


def task_objective(p, task, noise, hp, n_way, z_final=None):
    """(task loss, final latents) of one task. z_final: the final latents used in the
    encoder penalty (stop_gradient: held fixed while p is perturbed)."""
    xs, ys, xq, yq = task
    nk, d = xs.shape
    k = nk // n_way
    latents = hp["num_latents"]
    masks = iter(noise["support_masks"])
    codes = (xs * noise["encoder_mask"]) @ p["encoder"]
    left, right = codes @ p["relation0"][:latents], codes @ p["relation0"][latents:]
    hidden = relu(left[:, None, :] + right[None, :, :])
    hidden = relu(hidden @ p["relation1"])
    pairs = (hidden @ p["relation2"]).mean(axis=1)
    per_class = np.repeat(pairs.reshape(n_way, k, -1).mean(axis=1, keepdims=True), k, axis=1)
    mean, raw = split(per_class)
    std = np.exp(raw) - 1.0
    assert (std > FLOOR).all(), "the test's latents must not sit on the std floor"
    z0 = mean + std * noise["latents"]
    kl = (-0.5 * ((z0 - mean) / std) ** 2 - np.log(std) + 0.5 * z0 ** 2).mean()

    offset = np.sqrt(2.0 / (d + n_way))
    weight_noise = iter(noise["weights"])
    z = z0
    w, cache = decode(z, p["decoder"], next(weight_noise), offset)
    mask = next(masks)
    loss, grad_w = summed_ce_and_weight_grad(xs * mask, ys, w)
    for _ in range(hp["inner_unroll_length"]):
        z = z - p["inner_lr"] * latent_grad(grad_w, cache, p["decoder"])
        w, cache = decode(z, p["decoder"], next(weight_noise), offset)
        loss, grad_w = summed_ce_and_weight_grad(xs * next(masks), ys, w)
    steps = hp["finetuning_unroll_length"]
    for step in range(1, steps + 1):
        w = w - p["finetuning_lr"] * grad_w
        if step < steps:
            loss, grad_w = summed_ce_and_weight_grad(xs * next(masks), ys, w)
    query_loss, _ = summed_ce_and_weight_grad(xq * noise["query_mask"], yq, w)
    held = z if z_final is None else z_final
    penalty = ((held - z0) ** 2).mean()
    total = query_loss / len(yq) + hp["kl_weight"] * kl + hp["encoder_penalty_weight"] * penalty
    return total, z


def orthogonality(w):
    norms = np.linalg.norm(w, axis=1, keepdims=True) + 1e-32
    correlation = (w @ w.T) / (norms @ norms.T)
    return ((correlation - np.eye(len(w))) ** 2).mean()


def meta_objective(p, tasks, noises, hp, n_way, z_finals=None):
    """(meta-loss, final latents per task)."""
    results = [task_objective(p, task, noise, hp, n_way, None if z_finals is None else z_finals[i])
               for i, (task, noise) in enumerate(zip(tasks, noises))]
    loss = np.mean([r[0] for r in results])
    l2 = sum((p[name] ** 2).sum() for name in ("encoder", "relation0", "relation1", "relation2", "decoder")) / 2
    loss += hp["l2_penalty_weight"] * l2 + hp["orthogonality_penalty_weight"] * orthogonality(p["decoder"])
    return loss, [r[1] for r in results]
