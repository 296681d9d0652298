"""Results and how they are shown: report dataclasses and the JSON schema (``report``), gates, the one table
renderer for every format (``render``), plots, and the rich console (``console``). No TensorFlow."""
