"""Search spaces: typed parameters whose values form plain JSON configurations.

The package splits by job, each module above the ones it uses:

- :mod:`qd.space.values`: checks and copies of plain JSON values.
- :mod:`qd.space.repair`: repair of LLM output into valid values.
- :mod:`qd.space.prompt`: a schema as compact text for LLM prompts.
- :mod:`qd.space.schema`: the parameter types, validation, canonical form and hashing,
  and :meth:`~qd.space.schema.Param.walk` over (path, parameter, value) triples.
- :mod:`qd.space.units`: Float/Int leaves as numbers in ``[0, 1]`` and back.
- :mod:`qd.space.packing`: configurations of flat numeric spaces as bytes (identity, storage).

Everything a domain or operator needs is re-exported here (``from qd.space import Space``).
"""
from qd.space.packing import Layout
from qd.space.schema import Bool, Categorical, Float, Int, Numeric, Param, Path, Seq, Space, Text, param_from_dict
from qd.space.units import UnitTransform
from qd.space.values import json_copy

__all__ = ["Param", "Numeric", "Float", "Int", "Categorical", "Bool", "Text", "Seq", "Space", "param_from_dict",
           "Path", "UnitTransform", "Layout", "json_copy"]
