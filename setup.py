"""Install the lainctr library (the model zoo's shared code).

Install torch==2.13.0 first (a local CPU build on our machines; an unpinned torch pulls GBs of CUDA).
"""
from setuptools import find_packages, setup

setup(
    name="lainctr",
    version="0.1.0",
    description="LAIN (Length-Adaptive Interest Network) and long-sequence CTR backbones on FuxiCTR",
    packages=find_packages(include=["lainctr", "lainctr.*"]),
    python_requires=">=3.10,<3.13",  # numpy 1.26 (required by fuxictr 2.3.9) has no wheels for 3.13
    install_requires=[
        "torch>=2.0",
        # 2.3.9 is the last wheel without Ray and with a seeded, deterministic loader (FUXICTR_NOTES s.1);
        # its code uses np.Inf / keras-style padding and sklearn log_loss(eps=), hence the pins below.
        "fuxictr==2.3.9",
        "numpy<2",               # fuxictr 2.3.9 uses np.Inf, removed in NumPy 2
        "scikit-learn<1.5",      # fuxictr's logloss passes eps=, removed in scikit-learn 1.5
        "pyarrow<20",            # pyarrow >= 20 refuses NumPy 1.x (pandas then finds no parquet engine)
        "polars<=1.0.0",         # fuxictr's CSV reader uses scan_csv(dtypes=), removed in polars 1.x/2.x
        "pandas<3",
        "packaging",             # imported by fuxictr but not declared by its wheel
        "h5py>=3.8",
        "pyyaml>=6",
        # results-file and dataset-folder locks (lainctr/atomic.py); >=4.3 re-locks when a waiter got a lock
        # file that its holder unlinked, which lets the holder remove the lock file on release
        "filelock>=4.3",
        "tqdm>=4.60",
        "matplotlib>=3.7",
    ],
    # lint and type-check pins: new releases add rules and checks, so CI's verdict would change without a commit
    extras_require={
        "test": ["pytest>=7", "ruff==0.17.6", "mypy==2.4.1"],
        # python -m lainctr.export (ONNX): torch.onnx.export's default exporter (dynamo=True) needs onnxscript and
        # onnx; onnxruntime runs and checks the artefact. lainctr/onnx_translations.py works around onnxscript
        # 0.7.2's translations, so its minor version is pinned; scripts/setup.sh installs this extra (CI runs the
        # parity tests, tests/test_export.py)
        "export": ["onnx>=1.18", "onnxscript==0.7.*", "onnxruntime>=1.20"],
    },
)
