"""roberta_torch: keras_hub's RoBERTa / XLM-RoBERTa backbones as PyTorch modules."""

import pathlib

from setuptools import find_namespace_packages, setup

HERE = pathlib.Path(__file__).parent

setup(
    name="roberta_torch",
    version="0.1.0",
    description=(
        "PyTorch-native RoBERTa / XLM-RoBERTa encoders, numerically identical to "
        "keras_hub's backbones, with a Triton flash-attention kernel and padding-free execution."
    ),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # tests/, examples/ and benchmarks/ stay out of the installed package. The asset
    # folders (the shipped preset) are namespace packages so their data files are installed.
    packages=find_namespace_packages(include=["roberta_torch", "roberta_torch.*"]),
    package_data={"roberta_torch.assets": ["*.md", "presets/*/*.*", "presets/*/assets/*/*.*"]},
    install_requires=[
        # What CI tests (.ci/run: torch 2.13 CPU); torch.library.custom_op and friends are
        # used at import.
        "torch>=2.13",
        "numpy>=1.23",
        "safetensors>=0.4",
        "huggingface_hub>=0.23",
        "kagglehub>=0.3",
        "h5py>=3.8",
        "tokenizers>=0.19",
        "sentencepiece>=0.2",
        "tqdm>=4.60",
    ],
    extras_require={
        "gpu": ["triton>=3.0"],
        # `roberta-torch serve`: the ASGI app, its server, /metrics.
        "serve": ["starlette>=0.37", "uvicorn>=0.29", "prometheus_client>=0.20"],
        "test": [
            "pytest>=7",
            # The interpreter tests of the Triton kernel run on CPU.
            "triton>=3.0",
            # Peers the tests compare against.
            "transformers>=4.40",
            "keras-hub>=0.32",
            "keras>=3.5",
            # torch.onnx.export(dynamo=True) and running its graph.
            "onnx>=1.16",
            "onnxscript>=0.2",
            "onnxruntime>=1.18",
            # The reference of roberta_torch.embedding and .reranking (its directories are written by it).
            "sentence-transformers>=5",
            # The server (the `serve` extra) and the real clients its tests talk to it with.
            "starlette>=0.37",
            "uvicorn>=0.29",
            "prometheus_client>=0.20",
            "httpx>=0.25",
            "openai>=1.40",
            # The fine-tuning tools the training tests and examples drive (issue 20): HF
            # Trainer needs accelerate; Lightning, datasets and PEFT are what users combine.
            "accelerate>=1.1",
            "lightning>=2.2",
            "datasets>=2.18",
            "peft>=0.13",
        ],
        "bench": [
            "transformers>=4.40", "matplotlib>=3.6", "sentence-transformers>=5",
            # bench_serve.py: the servers and their load generator.
            "starlette>=0.37", "uvicorn>=0.29", "prometheus_client>=0.20", "httpx>=0.25", "fastapi>=0.110",
        ],
    },
    entry_points={"console_scripts": ["roberta-torch=roberta_torch.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Framework :: PyTorch",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
