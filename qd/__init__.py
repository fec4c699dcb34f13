"""qd: quality-diversity search over the design space of compound AI systems."""
