"""The seed workflow written as a plain PyTorch script: the wall-time peer of `jaxdl train`.

It does what `jaxdl train --config experiments/simplenet_exact.py` does, the way a PyTorch user
would write it by hand: load breast_cancer from scikit-learn, split train/val/test, standardize
on the train split, train an MLP 30->10->10->1 (relu, sigmoid BCE) for 10 epochs with batch 32
and Adam 1e-3, report validation each epoch, then evaluate and print the test loss and accuracy.
`benchmarks/seed_workload.py` times this whole process (interpreter start and imports included).

Run it:
    .venv/bin/python benchmarks/torch_seed_script.py
"""

import time

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from torch import nn

SEED = 0
EPOCHS = 10
BATCH_SIZE = 32
LEARNING_RATE = 1e-3


def load_split(seed):
    """Stratified 65/15/20 train/val/test split, standardized with train statistics only."""
    x, y = load_breast_cancer(return_X_y=True)
    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=0.2, stratify=y, random_state=seed
    )
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.15 / 0.8, stratify=y_rest, random_state=seed
    )
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # a constant column would otherwise divide by zero

    def as_tensors(xs, ys):
        xs = torch.as_tensor(((xs - mean) / std).astype(np.float32))
        return xs, torch.as_tensor(ys.astype(np.float32))

    return as_tensors(x_train, y_train), as_tensors(x_val, y_val), as_tensors(x_test, y_test)


def evaluate(model, loss_fn, x, y):
    with torch.no_grad():
        logits = model(x)[:, 0]
        loss = loss_fn(logits, y).item()
        accuracy = ((logits > 0).float() == y).float().mean().item()
    return loss, accuracy


def main():
    start = time.perf_counter()
    torch.manual_seed(SEED)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = load_split(SEED)
    model = nn.Sequential(
        nn.Linear(x_train.shape[1], 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 1)
    )
    # Logits + BCEWithLogits is the numerically stable form of sigmoid + binary cross-entropy.
    loss_fn = nn.BCEWithLogitsLoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    n = x_train.shape[0]
    for epoch in range(EPOCHS):
        model.train()
        order = torch.randperm(n)
        for first in range(0, n, BATCH_SIZE):  # the last partial batch is kept, as in jaxdl/Keras
            idx = order[first : first + BATCH_SIZE]
            optimizer.zero_grad()
            loss = loss_fn(model(x_train[idx])[:, 0], y_train[idx])
            loss.backward()
            optimizer.step()
        model.eval()
        val_loss, val_accuracy = evaluate(model, loss_fn, x_val, y_val)
        print(f"epoch {epoch + 1}: val_loss={val_loss:.4f} val_accuracy={val_accuracy:.4f}")
    test_loss, test_accuracy = evaluate(model, loss_fn, x_test, y_test)
    print(f"test: loss={test_loss:.4f} accuracy={test_accuracy:.4f}")
    print(f"in-process time: {time.perf_counter() - start:.2f}s")


if __name__ == "__main__":
    main()
