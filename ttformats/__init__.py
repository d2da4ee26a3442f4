"""The ground floor: formats and definitions every room shares (the simulator, the load generator, the analysis
and the command line all stand on it; it imports none of them)."""
