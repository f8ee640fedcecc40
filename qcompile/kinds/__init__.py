"""Recipe section kinds: one module per kind, holding its pydantic section and how it compiles into nodes."""

from .builder import Builder, Variant
from .registry import GROUPS, kinds, register
from .section import Kind, Section

__all__ = ["Builder", "GROUPS", "Kind", "Section", "Variant", "kinds", "register"]
