"""Train the MNIST digit classifier that `gangealing eval-gan` / `bench` use to read generated digits.

    python scripts/train_digit_classifier.py [--epochs 4] [--out src/gangealing/metrics/weights/mnist_digits.pt]

Trains on MNIST's labelled training split (60,000 digits, the embedded `mnist` dataset, prepared
exactly as the GAN data: 28 px Lanczos-resized to 32 px), prints the accuracy on the 10,000 test
digits, and refuses to save below --min-accuracy (default 0.99). Evaluation only: no model of the
project is trained on labels.
"""
import argparse
import json
import time

import torch

from gangealing.data import prepare_dataset
from gangealing.metrics.digits import WEIGHTS, predict_digits, save_digit_classifier, train_digit_classifier


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--out", default=str(WEIGHTS))
    ap.add_argument("--min-accuracy", type=float, default=0.99)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    t0 = time.time()
    train = prepare_dataset("mnist", 32, "center", split="train")
    test = prepare_dataset("mnist", 32, "center", split="test")
    model = train_digit_classifier(train.images, train.labels, epochs=args.epochs, width=args.width, device=args.device)
    pred = predict_digits(model, torch.from_numpy(test.images[:]).float().div(127.5).sub(1.0))
    acc = float((pred == torch.from_numpy(test.labels)).double().mean())
    print(json.dumps({"test_accuracy": round(acc, 5), "n_test": len(test), "epochs": args.epochs,
                      "seconds": round(time.time() - t0, 1)}))
    if acc < args.min_accuracy:
        raise SystemExit(f"test accuracy {acc:.4f} is below --min-accuracy {args.min_accuracy}; not saved")
    print("saved", save_digit_classifier(model, args.out))


if __name__ == "__main__":
    main()
