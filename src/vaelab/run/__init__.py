"""A run folder as one unit: its names (folder), its tensors and checkpoint (checkpoint), setting a run
up and training it (setup), and its pictures and other outputs (outputs)."""
