"""One module per API dialect; each parses requests and renders answers in its own wire format."""
