"""The deployment bundle: its layout (model, preprocessing contract, labels, manifest) and the reference runner."""
