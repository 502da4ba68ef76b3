"""Install the lainctr library (the model zoo's shared code).

Install torch==2.13.0 first (a local CPU build on our machines; an unpinned torch pulls GBs of CUDA).
"""
from setuptools import find_packages, setup

setup(
    name="lainctr",
    version="0.1.0",
    description="LAIN (Length-Adaptive Interest Network) and long-sequence CTR backbones on FuxiCTR",
    packages=find_packages(include=["lainctr", "lainctr.*"]),
    # 3.10 to 3.14 (CI tests 3.11, the Python our machines have, on the oldest and the newest stack below);
    # no upper bound: none of our dependencies' current releases shows a break
    python_requires=">=3.10",
    # Lower bounds = the oldest stack CI tests (.ci/constraints-oldest.txt); no upper pins: the newest releases
    # are tested too. FuxiCTR 2.3.9's np.Inf (fit), log_loss(eps=) (metrics) and polars scan_csv(dtypes=)
    # (CSV reader) break on NumPy 2 / scikit-learn >= 1.5 / polars >= 1, but the zoo calls none of them: it
    # imports only FuxiCTR's FeatureMap, layers and seed_everything (lainctr/trainer.py trains, lainctr/metrics.py
    # scores, data_preprocess/ reads with pyarrow).
    install_requires=[
        "torch>=2.0",
        # 2.3.9 is the last wheel without Ray and with a seeded, deterministic loader (FUXICTR_NOTES s.1)
        "fuxictr==2.3.9",
        "numpy>=1.26",           # 1.x and 2.x
        "scikit-learn>=1.4",
        "pyarrow>=19",           # pyarrow >= 20 needs NumPy 2: the oldest stack pins 19 next to NumPy 1.26
        "pandas>=2.2",           # 2.x and 3.x
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
