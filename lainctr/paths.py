"""Where the zoo (model_zoo/, config/) and the data live."""
from __future__ import annotations

import os

DATA_ROOT_ENV = "LAINCTR_DATA_ROOT"
ZOO_ROOT_ENV = "LAINCTR_ZOO_ROOT"


def zoo_root() -> str:
    """The repository holding ``model_zoo/`` and ``config/``: $LAINCTR_ZOO_ROOT, else the checkout that
    contains this package (editable install), else the working directory."""
    if os.environ.get(ZOO_ROOT_ENV):
        return os.path.abspath(os.environ[ZOO_ROOT_ENV])
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for candidate in (here, os.getcwd()):
        if os.path.isdir(os.path.join(candidate, "model_zoo")):
            return candidate
    raise FileNotFoundError(f"cannot find the zoo (a folder with model_zoo/); set ${ZOO_ROOT_ENV}")


def data_root(override: str = None) -> str:
    """Root of all dataset folders: ``--data_root``, else $LAINCTR_DATA_ROOT, else ``<zoo>/data``."""
    return os.path.abspath(override or os.environ.get(DATA_ROOT_ENV) or os.path.join(zoo_root(), "data"))
