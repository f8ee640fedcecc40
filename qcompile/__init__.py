"""qcompile: a declarative compiler for quantized model deployment.

The library API mirrors the CLI::

    recipe = qcompile.load_recipe("demo", overrides=["quant.per_channel=false"])
    plan = qcompile.compile_plan(recipe)
    result = qcompile.build(recipe, "out/demo")
"""

from .builds import BuildResult, build
from .cache import Cache
from .errors import BadInput, GateFailed, QcompileError
from .plan import compile_plan
from .recipe.load import load_recipe, validate
from .recipe.schema import Recipe

__version__ = "0.1.0"

__all__ = ["BadInput", "BuildResult", "Cache", "GateFailed", "QcompileError", "Recipe", "build",
           "compile_plan", "load_recipe", "validate"]
