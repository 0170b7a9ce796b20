"""Train a small sigmoid MLP with plain SGD, with and without normalization.

A deep stack of sigmoid layers on raw, badly scaled features is the textbook
case where batch normalization pays off: without it the pre-activations
saturate and the gradients vanish layer by layer.  This script trains the same
network (same data, same initial weights, same batches) three times -- without
normalization, with ``fastnorm.BatchNorm`` and with ``fastnorm.LayerNorm``
between each linear layer and its sigmoid -- prints the training loss per
epoch, and saves a plot when matplotlib is installed.

Run::

    python examples/train_mlp.py --epochs 15 --plot train_mlp.png

Everything except the normalization layers is NumPy: each layer has
``__call__`` (forward), ``backward(dy) -> dx`` and ``step(lr)``.
"""

import argparse
import time

import numpy as np

import fastnorm

NORMS = ("none", "batchnorm", "layernorm")


def make_dataset(n_samples=2048, n_features=16, n_classes=4, seed=0, dtype=np.float32):
    """Synthetic classification set: labels from a random nonlinear teacher.

    The features get large per-feature offsets and scales (as raw measurements
    often have), which is what makes training without normalization hard.

    Parameters
    ----------
    n_samples, n_features, n_classes : int
        Size of the set.
    seed : int
        Seed of the generator.
    dtype : numpy dtype
        dtype of the features.

    Returns
    -------
    x : ndarray of shape (n_samples, n_features)
    labels : ndarray of int64, shape (n_samples,)

    Examples
    --------
    >>> x, labels = make_dataset(100, seed=1)
    >>> x.shape, labels.shape, int(labels.max()) < 4
    ((100, 16), (100,), True)
    """
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n_samples, n_features))
    teacher = rng.normal(size=(n_features, 32))
    readout = rng.normal(size=(32, n_classes))
    labels = np.argmax(np.tanh(z @ teacher) @ readout, axis=1)
    offset = rng.uniform(-4.0, 4.0, size=n_features)
    scale = np.exp(rng.uniform(-1.0, 1.5, size=n_features))
    return (z * scale + offset).astype(dtype), labels.astype(np.int64)


class Linear:
    """Fully connected layer ``x @ W + b`` with LeCun-normal initial weights."""

    def __init__(self, n_in, n_out, rng, dtype):
        self.W = rng.normal(0.0, 1.0 / np.sqrt(n_in), size=(n_in, n_out)).astype(dtype)
        self.b = np.zeros(n_out, dtype)

    def __call__(self, x):
        self.x = x
        return x @ self.W + self.b

    def backward(self, dy):
        self.dW = self.x.T @ dy
        self.db = dy.sum(axis=0)
        return dy @ self.W.T

    def step(self, lr):
        self.W -= lr * self.dW
        self.b -= lr * self.db


class Sigmoid:
    """Logistic activation."""

    def __call__(self, x):
        self.y = 1.0 / (1.0 + np.exp(-x))
        return self.y

    def backward(self, dy):
        return dy * self.y * (1.0 - self.y)

    def step(self, lr):
        pass


class Norm:
    """Adapts a fastnorm layer to the SGD loop (updates weight and bias)."""

    def __init__(self, layer):
        self.layer = layer

    def __call__(self, x):
        return self.layer(x)

    def backward(self, dy):
        return self.layer.backward(dy)

    def step(self, lr):
        if self.layer.weight is not None:
            self.layer.weight -= lr * self.layer.weight_grad
        if getattr(self.layer, "bias", None) is not None:
            self.layer.bias -= lr * self.layer.bias_grad


def build_mlp(n_in, hidden, n_out, norm, seed, dtype=np.float32):
    """Linear -> [norm] -> sigmoid blocks, then a linear read-out.

    Parameters
    ----------
    n_in, n_out : int
        Input features and classes.
    hidden : sequence of int
        Width of each hidden layer.
    norm : {"none", "batchnorm", "layernorm"}
        Normalization between each hidden linear layer and its sigmoid.
    seed : int
        Seed of the initial weights (the same for every ``norm``).
    dtype : numpy dtype

    Returns
    -------
    list of layers

    Raises
    ------
    ValueError
        On an unknown ``norm``.

    Examples
    --------
    >>> [type(l).__name__ for l in build_mlp(4, (8,), 2, "layernorm", seed=0)]
    ['Linear', 'Norm', 'Sigmoid', 'Linear']
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    rng = np.random.default_rng(seed)
    layers = []
    width = n_in
    for h in hidden:
        layers.append(Linear(width, h, rng, dtype))
        if norm == "batchnorm":
            layers.append(Norm(fastnorm.BatchNorm(h, dtype=dtype)))
        elif norm == "layernorm":
            layers.append(Norm(fastnorm.LayerNorm(h, dtype=dtype)))
        layers.append(Sigmoid())
        width = h
    layers.append(Linear(width, n_out, rng, dtype))
    return layers


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy and its gradient with respect to the logits.

    Parameters
    ----------
    logits : ndarray of shape (n, classes)
    labels : ndarray of int, shape (n,)

    Returns
    -------
    loss : float
    grad : ndarray
        d loss / d logits, logits' shape and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> loss, grad = cross_entropy(np.zeros((2, 4)), np.array([0, 3]))
    >>> round(loss, 4), grad.shape
    (1.3863, (2, 4))
    """
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    n = len(labels)
    loss = -logp[np.arange(n), labels].mean()
    grad = np.exp(logp)
    grad[np.arange(n), labels] -= 1.0
    return float(loss), (grad / n).astype(logits.dtype)


def train(layers, x, labels, *, epochs, lr, batch_size, seed):
    """Plain mini-batch SGD in training mode.

    Parameters
    ----------
    layers : list
        From :func:`build_mlp`; updated in place.
    x, labels : ndarray
        Training set.
    epochs : int
    lr : float
        Learning rate.
    batch_size : int
        Incomplete last batches are dropped.
    seed : int
        Seed of the batch order.

    Returns
    -------
    list of float
        Mean training loss of each epoch.

    Examples
    --------
    >>> x, labels = make_dataset(128)
    >>> mlp = build_mlp(16, (8,), 4, "batchnorm", seed=0)
    >>> len(train(mlp, x, labels, epochs=2, lr=0.1, batch_size=32, seed=0))
    2
    """
    rng = np.random.default_rng(seed)
    losses = []
    for layer in layers:
        if isinstance(layer, Norm):
            layer.layer.train()
    for _ in range(epochs):
        order = rng.permutation(len(x))
        total, batches = 0.0, 0
        for start in range(0, len(x) - batch_size + 1, batch_size):
            idx = order[start:start + batch_size]
            h = x[idx]
            for layer in layers:
                h = layer(h)
            loss, g = cross_entropy(h, labels[idx])
            for layer in reversed(layers):
                g = layer.backward(g)
            for layer in layers:
                layer.step(lr)
            total += loss
            batches += 1
        losses.append(total / batches)
    return losses


def evaluate(layers, x, labels):
    """Loss and accuracy in evaluation mode (BatchNorm uses running statistics).

    Parameters
    ----------
    layers : list
        From :func:`build_mlp`; switched to evaluation mode.
    x, labels : ndarray

    Returns
    -------
    loss, accuracy : float

    Examples
    --------
    >>> x, labels = make_dataset(64)
    >>> loss, acc = evaluate(build_mlp(16, (8,), 4, "none", seed=0), x, labels)
    >>> 0.0 <= acc <= 1.0
    True
    """
    for layer in layers:
        if isinstance(layer, Norm):
            layer.layer.eval()
    h = x
    for layer in layers:
        h = layer(h)
    loss, _ = cross_entropy(h, labels)
    return loss, float((h.argmax(axis=1) == labels).mean())


def run(epochs=15, seed=0, *, norms=NORMS, n_samples=2048, hidden=(64, 64, 64, 64),
        lr=0.2, batch_size=64, verbose=True):
    """Train the MLP once per normalization choice and return the loss curves.

    Every run sees the same data, initial weights and batch order; only the
    normalization differs.

    Parameters
    ----------
    epochs : int
        Passes over the training set.
    seed : int
        Seed of data, weights and batch order.
    norms : sequence of {"none", "batchnorm", "layernorm"}
        Which variants to train.
    n_samples : int
        Training set size.
    hidden : sequence of int
        Hidden layer widths.
    lr : float
        SGD learning rate.
    batch_size : int
        Mini-batch size (incomplete last batches are dropped).
    verbose : bool
        Print a loss table per epoch and the final evaluation.

    Returns
    -------
    dict of str to list of float
        ``{norm: [mean training loss of each epoch]}``.

    Examples
    --------
    >>> curves = run(epochs=2, n_samples=256, verbose=False)
    >>> sorted(curves), len(curves["none"])
    (['batchnorm', 'layernorm', 'none'], 2)
    """
    x, labels = make_dataset(n_samples, seed=seed)
    n_classes = int(labels.max()) + 1
    curves, final = {}, {}
    for norm in norms:
        layers = build_mlp(x.shape[1], hidden, n_classes, norm, seed)
        t0 = time.perf_counter()
        curves[norm] = train(layers, x, labels, epochs=epochs, lr=lr,
                             batch_size=batch_size, seed=seed + 1)
        final[norm] = evaluate(layers, x, labels) + (time.perf_counter() - t0,)
    if verbose:
        print("epoch " + "".join(f"{n:>12}" for n in norms))
        for e in range(epochs):
            print(f"{e + 1:5d} " + "".join(f"{curves[n][e]:12.4f}" for n in norms))
        print("eval-mode loss / accuracy on the training set:")
        for n in norms:
            loss, acc, secs = final[n]
            print(f"  {n:>10}: loss {loss:.4f}, accuracy {acc:.3f} ({secs:.1f} s)")
    return curves


def save_plot(curves, path):
    """Save the loss curves as a line plot.

    Parameters
    ----------
    curves : dict of str to list of float
        What :func:`run` returns.
    path : str or path-like
        Image file to write.

    Returns
    -------
    bool
        False (and nothing written) when matplotlib is not installed.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, losses in curves.items():
        ax.plot(range(1, len(losses) + 1), losses, marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean training cross-entropy")
    ax.set_title("Sigmoid MLP trained by SGD")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv=None):
    """Command line entry point: train, print the table, save the plot.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``); see ``--help``.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=0.2)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--plot", default="train_mlp.png",
                        help="where to save the loss plot (needs matplotlib)")
    args = parser.parse_args(argv)
    curves = run(args.epochs, args.seed, lr=args.lr, n_samples=args.samples)
    if save_plot(curves, args.plot):
        print(f"plot saved to {args.plot}")
    else:
        print("matplotlib is not installed; no plot saved")


if __name__ == "__main__":
    main()
