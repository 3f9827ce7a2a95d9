"""The training workflow a pip user runs: data sets, the training loop, model files and the CLI."""
from .config import NonFiniteLossError, RunError, TrainConfig
from .data import DataError, ImageData, load_images
from .evaluation import evaluate_bits, evaluate_bits_per_dim
from .trainer import train

__all__ = ["DataError", "ImageData", "NonFiniteLossError", "RunError", "TrainConfig", "evaluate_bits",
           "evaluate_bits_per_dim", "load_images", "train"]
