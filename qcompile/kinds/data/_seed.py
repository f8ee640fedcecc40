"""The one declaration of what a seed may be: numpy's generators take 0 to 2**32 - 1, so a recipe's seed outside
that range is bad input at load time (naming its key), not a ValueError from numpy mid-build."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
