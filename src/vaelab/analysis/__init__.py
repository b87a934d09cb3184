"""What is measured on trained models, and fitted to them afterwards: the disentanglement metrics and
a run measured with them (factors), runs side by side (compare), and a VQ-VAE's code prior (prior_fit)."""
