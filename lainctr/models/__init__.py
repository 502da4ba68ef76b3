"""The model contract (branches + head), the LAIN-variant builder and parameter accounting."""
from .accounting import lain_parameter_count, lain_parameters
from .base import ModelOutput, SequenceCTRModel
from .branch import BranchInputs, BranchOutput, InterestBranch, ShortTermBranch
from .lain_variant import lain_variant
from .signature import model_keys

__all__ = ["lain_parameter_count", "lain_parameters", "ModelOutput", "SequenceCTRModel", "BranchInputs",
           "BranchOutput", "InterestBranch", "ShortTermBranch", "lain_variant", "model_keys"]
