"""dgm-bench: reproduce published tables of generative and reversible models.

The pipeline is spec -> runner -> records -> renderer; see README.md.
"""

__version__ = "0.1.0"
