"""The training workflow a pip user runs: data sets, the training loop, model files, the CLI, and
push_run (a run folder onto the Hugging Face Hub)."""
from .config import NonFiniteLossError, RunError, TrainConfig
from .data import DataError, ImageData, load_images
from .evaluation import evaluate_bits, evaluate_bits_per_dim
from .hub import push_run  # imports huggingface_hub only when called
from .trainer import train

__all__ = ["DataError", "ImageData", "NonFiniteLossError", "RunError", "TrainConfig", "evaluate_bits",
           "evaluate_bits_per_dim", "load_images", "push_run", "train"]
