"""Raw-domain imaging simulation: unprocess, optics, CFA, noise, demosaic, process; virtual lenses."""
