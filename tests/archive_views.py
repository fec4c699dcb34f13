"""What an archive shows, as plain data, for tests that compare two archives exactly."""
from __future__ import annotations

import numpy as np


def exact(archive):
    """Everything an archive shows, in its own order: elites, statistics, best elite."""
    data = {k: (v.tolist() if k != "solution" else list(v)) for k, v in archive.data().items()} if len(archive) else {}
    best = archive.best_elite
    return data, archive.stats, None if best is None else {k: np.asarray(v).tolist() if k != "solution" else v
                                                          for k, v in best.items()}
