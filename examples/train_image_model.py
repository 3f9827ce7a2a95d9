"""Train the Axial Transformer on scikit-learn's bundled digits, print test bits/dim, write samples.

    python examples/train_image_model.py                       # runs/digits: samples.png, curves.png, model files
    python examples/train_image_model.py --resume              # continue a killed run: same final weights
    python examples/train_image_model.py --device cuda --precision bf16 --data photos/ --size 32 --out runs/photos

This is `axial-attention train` (`python -m axial_attention train`): every flag of that command works
here; `axial-attention train --help` lists them.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing
from axial_attention.training.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
