"""The deployment bundle: its layout (model, preprocessing or text contract, labels, manifest) and the reference
runners (images and samples; sentences for a text encoder)."""
