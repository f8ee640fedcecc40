"""A regression model on real data, with its own metrics: scikit-learn's diabetes data (442 patients, 10 baseline
measurements, disease progression one year later; Efron et al., 2004, shipped inside scikit-learn), a small MLP
trained here, and R^2 / mean absolute error as the quality that matters.

The same module is the model factory (``build_model``), the data factory (``load_data``) and the metrics (``r2``,
``mae``) of the packaged recipe ``diabetes_regression``. Patients 0-299 train the model and calibrate; 300-441
evaluate it, so no evaluated patient was seen in training.
"""

from __future__ import annotations

TRAIN = slice(0, 300)
HELD_OUT = slice(300, 442)


def _data():
    import numpy as np
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)  # features already centred and scaled by scikit-learn
    # Targets standardised on the training patients, so the net trains at unit scale; metrics are scale-free (R^2)
    # or read back in the original units (mae).
    mean, std = y[TRAIN].mean(), y[TRAIN].std()
    return x.astype(np.float32), ((y - mean) / std).astype(np.float32)[:, None], float(std)


def build_model(hidden: int = 64, epochs: int = 400, seed: int = 0):
    """An MLP 10 -> hidden -> hidden -> 1, trained with Adam on the 300 training patients (full batch, seeded, one
    thread, so the same weights come out on every run of the same machine)."""
    import torch

    x, y, _ = _data()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Linear(10, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                                  torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
        opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-3)
        xt, yt = torch.from_numpy(x[TRAIN]), torch.from_numpy(y[TRAIN])
        for _ in range(epochs):
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(xt), yt).backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


def load_data(split: str):
    """``{"input": features, "labels": standardised progression}`` of the training patients (``split="calib"``) or
    the held-out ones (``split="eval"``)."""
    x, y, _ = _data()
    part = TRAIN if split == "calib" else HELD_OUT
    return {"input": x[part], "labels": y[part]}


def r2(outputs, labels) -> float:
    """Coefficient of determination of the prediction against the held-out progression (1 is perfect, 0 is as
    good as predicting the mean)."""
    import numpy as np

    pred = np.asarray(outputs["prediction"], np.float64).reshape(-1)
    y = np.asarray(labels, np.float64).reshape(-1)
    return float(1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def mae(outputs, labels) -> float:
    """Mean absolute error in the disease-progression score's own units."""
    import numpy as np

    _, _, std = _data()
    pred = np.asarray(outputs["prediction"], np.float64).reshape(-1)
    return float(np.abs(pred - np.asarray(labels, np.float64).reshape(-1)).mean() * std)
