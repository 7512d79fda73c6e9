"""Predict one test subject of a data set with a trained model, from Python, and score it.

    python examples/predict_and_evaluate.py MODEL_DIR DATASET

The steps ``lesionseg predict`` takes for one subject: preprocess it as the model was
trained, run the method (every network and its prediction graph), map the probabilities
back onto the input grid, then evaluate against the reference when there is one. The
README shows this file; a test runs it.
"""

import sys

import numpy as np

from lesionseg.data.dataset import load_dataset
from lesionseg.data.nifti import load_nifti
from lesionseg.evaluation import evaluate_case
from lesionseg.inference.pipeline import load_models
from lesionseg.preprocess import PreprocessConfig, preprocess_subject


def main(model_dir: str, dataset_dir: str) -> np.ndarray:
    """Probabilities ``(X, Y, Z, K)`` of the first test subject, on its input grid."""
    method = load_models([model_dir])[0]  # the networks and their prediction graph
    dataset = load_dataset(dataset_dir)
    subject = (dataset.split("test") or dataset.subjects)[0]
    config = PreprocessConfig.from_dict(method.config["preprocess"])
    pre = preprocess_subject(subject, method.channel_names, config)
    probabilities = method.predict(pre.image, pre.mask)  # (K, x, y, z), preprocessed grid
    background = [1.0] + [0.0] * (len(probabilities) - 1)  # outside the brain crop
    on_input = pre.record.invert(probabilities, fill=background)  # (X, Y, Z, K), input grid
    labels = on_input.argmax(-1)
    image = load_nifti(next(iter(subject.channels.values())))
    print(f"{subject.id}: input {image.data.shape}, probabilities {on_input.shape}")
    print(f"lesion voxels: {int((labels > 0).sum())}")
    if subject.label is not None:
        reference = load_nifti(subject.label).data
        rows = evaluate_case(labels, reference, image.grid.spacing)
        print(f"Dice: {rows[0]['dice']:.3f}")
    return on_input


if __name__ == "__main__":
    main(*sys.argv[1:3])
