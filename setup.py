import re
from pathlib import Path

from setuptools import find_packages, setup

setup(
    # The distribution name differs from lucidrains' `axial-attention` on purpose; the import name
    # `axial_attention` is the same, so this package replaces that one (uninstall it first).
    name="torch-axial-attention",
    # one version, in the package (save_pretrained records it in config.json)
    version=re.search(r'__version__ = "([^"]+)"', Path(__file__).with_name("axial_attention").joinpath("_version.py")
                      .read_text(encoding="utf-8")).group(1),
    description="Axial attention for images, video and any N-dimensional tensor, on PyTorch's fused SDPA",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["axial_attention", "axial_attention.*"]),
    python_requires=">=3.9",
    # 2.4: the device-generic autocast queries (torch.get_autocast_dtype(device)) the reversible backward replays
    install_requires=["torch>=2.4", "einops>=0.7", "safetensors>=0.4"],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6", "build>=1.0"],
        # the trainer and the examples: bundled digits, progress bars, PNGs and curves
        "examples": ["scikit-learn>=1.0", "tqdm>=4.60", "pillow>=9", "matplotlib>=3.5"],
        # the documentation site: mkdocs build --strict (mkdocs.yml at the root, pages in docs/)
        "docs": ["mkdocs>=1.6", "mkdocs-material>=9", "mkdocstrings[python]>=0.26"],
        # optional integrations, imported lazily: an error names the extra where one is missing
        "hub": ["huggingface_hub>=0.24"],  # from_pretrained(repo_id), push_to_hub
        "timm": ["timm>=1.0.3"],  # the Axial-ResNets registered as timm models (1.0.3: features_only by getter)
        "onnx": ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.1"],  # torch.onnx.export(..., dynamo=True)
    },
    entry_points={"console_scripts": ["axial-attention = axial_attention.training.cli:main"]},
    classifiers=[
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
