"""Post-training conversion modes; values are the CLI words."""

from enum import Enum


class Mode(str, Enum):
    FP32 = "fp32"
    DYNAMIC = "dynamic"
    FLOAT16 = "float16"
    INT8 = "int8"
    INT16X8 = "int16x8"

    @property
    def needs_representative_data(self) -> bool:
        return self in (Mode.INT8, Mode.INT16X8)


MODE_NAMES = [m.value for m in Mode]


class IoType(str, Enum):
    FLOAT32 = "float32"
    INT8 = "int8"
    UINT8 = "uint8"
