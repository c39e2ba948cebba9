"""How the tap reaches one Confluence site, and the run-wide signals its streams share."""
