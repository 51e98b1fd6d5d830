"""Degradation transfer: register targets to photographs and fit the camera's PSF field."""
